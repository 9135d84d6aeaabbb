"""How a user's question becomes a keyword query, the same for every adapter.

Questions carry words that say they are questions ("how", "what", "does", "my"): they match nearly
every chunk, so BM25 ranks on noise. They are left out of the keyword query (unless nothing else
is left); the vector query sees the question as asked.
"""

import re

QUESTION_WORDS = frozenset(
    "how what why when where which who whom whose does do did done can could would should shall may might must"
    " i me my mine we us our you your s t am has have had get gets got".split()
)

_WORD = re.compile(r"[^\W_]+")


def keyword_words(text: str, *, stop_words: frozenset[str] = QUESTION_WORDS) -> list[str]:
    """The question's distinct words (lower-cased, letters and digits) without `stop_words`, or all of them if none remain."""
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(text)))
    return [word for word in words if word not in stop_words] or words
