"""Small talk, pure: a greeting, thanks or chit-chat is answered as it is, never "the documents do not cover it".

Recognised by its words alone: a short message every word of which is a small-talk word. Anything
naming a subject ("hello, how do I reset my password?") is a question, and is searched.
"""

import re

__all__ = ["MAX_SMALL_TALK_WORDS", "SMALL_TALK_WORDS", "is_small_talk"]

MAX_SMALL_TALK_WORDS = 10

SMALL_TALK_WORDS = frozenset(
    """
    hi hello hey heya hiya yo howdy greetings morning afternoon evening night good day there
    thanks thank thx ty cheers much lot so very you that this it helped helps great cool nice awesome
    perfect brilliant excellent wonderful fine ok okay k kk alright right sure yes yeah yep no nope
    bye goodbye see later soon take care have a an the lol haha hahaha wow oh ah hmm
    how are is what who can do doing today tonight going things what's whats how's hows who's
    i i'm im am we me my your yourself u r please help again just well all and too also
    """.split()
)

_WORD = re.compile(r"[a-z']+")


def is_small_talk(text: str) -> bool:
    """Whether `text` is only a greeting, thanks or chit-chat (no subject to look up)."""
    words = _WORD.findall(text.lower().replace("\u2019", "'"))
    if not words or len(words) > MAX_SMALL_TALK_WORDS or re.search(r"[0-9]", text):
        return False
    return all(word.strip("'") in SMALL_TALK_WORDS for word in words)
