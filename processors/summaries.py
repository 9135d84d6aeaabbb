"""Rolling summaries, pure: fold older turns into a bounded list of the facts the user stated.

The summary is extractive: it keeps the user's own sentences that state something (who they are,
names, numbers, what they have, want or decided), scored by simple signals, and drops small talk
and questions. When the summary outgrows its budget the weakest facts go first, the oldest among
equals. It needs no model, so it is cheap, deterministic and rebuildable by replay; a model-written
summary could replace `roll_summary` behind the same event.
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from events.values import SummaryFact
from inference.instructions import SUMMARY_HEADER


_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
_FIRST_PERSON = re.compile(
    r"\b(my|mine|i am|i'm|i have|i've|i live|i work|i was|i will|i'll|i need|i want|we|our|call me|named|name is)\b",
    re.IGNORECASE,
)
_DIGITS = re.compile(r"\d")
_INNER_CAPITAL = re.compile(r"(?<!^)(?<![.!?]\s)\b[A-Z][a-z]+")


@dataclass(frozen=True, kw_only=True)
class SummaryPolicy:
    trigger_tokens: int = 1_500  # unsummarized history beyond this is rolled into the summary
    keep_recent_turns: int = 6  # the newest turns stay verbatim in prompts
    max_tokens: int = 400  # the summary's own budget

    def may_have_summary(self, turns: int) -> bool:
        """Whether a conversation of `turns` turns (every branch's) can have a summary under this policy: one folds
        only turns before its branch's newest `keep_recent_turns`, so a conversation of no more turns has none."""
        return turns > self.keep_recent_turns


@dataclass(frozen=True, kw_only=True)
class FoldedTurn:
    turn_seq: int
    role: str
    text: str


def fact_score(sentence: str) -> int:
    """How much a sentence states (0: small talk or a question, not worth keeping)."""
    words = sentence.split()
    if len(words) < 3 or sentence.rstrip().endswith("?"):
        return 0
    score = 0
    if _FIRST_PERSON.search(sentence):
        score += 2
    if _DIGITS.search(sentence):
        score += 1
    if _INNER_CAPITAL.search(sentence):
        score += 1
    return score


def roll_summary(
    previous: Sequence[SummaryFact],
    turns: Sequence[FoldedTurn],
    *,
    max_tokens: int,
    count_tokens: Callable[[str], int],
) -> tuple[SummaryFact, ...]:
    """The previous facts plus those the user stated in `turns`, cut to `max_tokens` (weakest, then oldest, first)."""
    facts = list(previous)
    known = {fact.text for fact in facts}
    for turn in turns:
        if turn.role != "user":
            continue  # the assistant's words are not facts about the user's world
        for sentence in (part.strip() for part in _SENTENCES.split(turn.text)):
            if sentence and sentence not in known and fact_score(sentence) > 0:
                known.add(sentence)
                facts.append(SummaryFact(turn_seq=turn.turn_seq, text=sentence))
    # Drop the weakest facts, oldest first among equals, until the summary fits.
    while facts and count_tokens(summary_text(facts)) > max_tokens:
        weakest = min(range(len(facts)), key=lambda index: (fact_score(facts[index].text), facts[index].turn_seq))
        del facts[weakest]
    return tuple(facts)


def summary_text(facts: Sequence[SummaryFact]) -> str:
    """The summary as the prompt shows it."""
    return "\n".join([SUMMARY_HEADER, *(f"- (turn {fact.turn_seq}) {fact.text}" for fact in facts)])
