"""Abuse scores: violations add points to a user's score, which halves every half-life of event time.

The score is kept as (value, the instant it was true); it is decayed to each new event's time before points
are added, so a replay computes the same numbers. A score is forgotten once it has decayed below
`FORGOTTEN_BELOW`, at an instant computed when it was recorded (the fold needs no policy to drop it).
"""

import math
from datetime import datetime, timedelta

FORGOTTEN_BELOW = 0.01


def decayed(score: float, *, since: datetime, now: datetime, half_life_s: float) -> float:
    """`score`, recorded at `since`, as it stands at `now`."""
    elapsed_s = max(0.0, (now - since).total_seconds())
    return score * 0.5 ** (elapsed_s / half_life_s)


def forgotten_at(score: float, *, at: datetime, half_life_s: float) -> datetime:
    """When a score of `score` at `at` will have decayed below `FORGOTTEN_BELOW`."""
    if score <= FORGOTTEN_BELOW:
        return at
    return at + timedelta(seconds=half_life_s * math.log2(score / FORGOTTEN_BELOW))
