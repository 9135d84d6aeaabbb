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

# Elasticsearch's `_english_` stop words (Lucene's EnglishAnalyzer set): they match nearly every chunk.
ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these they"
    " this to was will with".split()
)
QUERY_STOP_WORDS = ENGLISH_STOP_WORDS | QUESTION_WORDS

_WORD = re.compile(r"[^\W_]+")


def keyword_words(text: str, *, stop_words: frozenset[str] = QUESTION_WORDS) -> list[str]:
    """The question's distinct words (lower-cased, letters and digits) without `stop_words`, or all of them if none remain."""
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(text)))
    return [word for word in words if word not in stop_words] or words


def content_words(text: str) -> list[str]:
    """The words of `text` the keyword search ranks on: distinct, lower-cased, without stop and question words."""
    return keyword_words(text, stop_words=QUERY_STOP_WORDS)


def passage_words(*texts: str) -> set[str]:
    """Every word of some texts (a passage's title, location and text), lower-cased, as `content_words` splits them."""
    return {word.lower() for text in texts for word in _WORD.findall(text)}
