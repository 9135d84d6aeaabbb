"""Profanity and insults by alt-profanity-check (a linear SVM over TF-IDF whose weights ship inside its wheel), as `harassment`.

The model was trained on short comments, so a long text is scored in segments of about `segment_words`
words (sentences grouped) and its score is the highest segment's: one insult in a long, polite answer
is not averaged away. It catches profanity, slurs and insults; it does not understand threats without
swear words, sarcasm, or any language but English, and it flags swearing that insults nobody.

`predict_prob` of the package goes through scikit-learn's input validation, about 3 ms a call whatever
the length. The model is a calibrated linear classifier, so this adapter reads its weights once at load
and scores with one sparse product and the sigmoid calibration, the same arithmetic in a fraction of a
millisecond; `load()` checks on a probe set that both agree and otherwise keeps the package's own path.
Loading (joblib, about 1 s) runs on a worker thread, once, at start; so does each classification.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from processors.safety.classifiers import Classification

CATEGORY = "harassment"
DEFAULT_SEGMENT_WORDS = 40
_SENTENCE_END = re.compile(r"(?<=[.!?;\n])\s+")
# Sentences the fast path must score exactly as the package does before it is used.
_PROBES = (
    "Thanks, the figures look right to me.",
    "You are a worthless idiot and everyone hates you.",
    "shut up",
    "The harbour tide tables are computed from harmonic constituents.",
)

Scorer = Callable[[Sequence[str]], np.ndarray]


class ProfanityClassifier:
    """Scores `harassment` as the highest profanity probability of the text's segments."""

    def __init__(self, *, scorer: Scorer, segment_words: int = DEFAULT_SEGMENT_WORDS, name: str = "profanity") -> None:
        self.name = name
        self._scorer = scorer
        self._segment_words = segment_words

    @classmethod
    async def load(cls, *, segment_words: int = DEFAULT_SEGMENT_WORDS, name: str = "profanity") -> ProfanityClassifier:
        """Loads the packaged model on a worker thread (about a second): call it at start."""
        scorer = await asyncio.to_thread(load_scorer)
        return cls(scorer=scorer, segment_words=segment_words, name=name)

    def scan(self, text: str) -> Classification:
        pieces = segments(text, max_words=self._segment_words)
        score = float(np.max(self._scorer(pieces))) if pieces else 0.0
        return Classification(classifier=self.name, scores={CATEGORY: round(min(1.0, max(0.0, score)), 6)})

    async def classify(self, text: str) -> Classification:
        return await asyncio.to_thread(self.scan, text)


def segments(text: str, *, max_words: int) -> list[str]:
    """Sentences grouped up to `max_words` words each (a longer sentence is cut every `max_words` words)."""
    pieces: list[str] = []
    current: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        words = sentence.split()
        while len(words) > max_words:
            if current:
                pieces.append(" ".join(current))
                current = []
            pieces.append(" ".join(words[:max_words]))
            words = words[max_words:]
        if current and len(current) + len(words) > max_words:
            pieces.append(" ".join(current))
            current = []
        current += words
    if current:
        pieces.append(" ".join(current))
    return pieces


def load_scorer() -> Scorer:
    """The packaged model's probability of "offensive" for each text (blocking: loads the model)."""
    from profanity_check import profanity_check as packaged

    try:
        fast = _linear_scorer(packaged.vectorizer, packaged.model)
    except (AttributeError, IndexError, TypeError, ValueError):
        fast = None
    if fast is not None and np.allclose(fast(_PROBES), packaged.predict_prob(list(_PROBES)), atol=1e-9):
        return fast
    return lambda texts: np.asarray(packaged.predict_prob(list(texts)))


def _linear_scorer(vectorizer: Any, model: Any) -> Scorer | None:
    """`CalibratedClassifierCV(LinearSVC, method="sigmoid")`'s predict_proba for class 1, from its fitted weights.

    Each of its k calibrated classifiers gives `expit(-(a * (x·w + b) + c))` (Platt scaling); the
    probability is their mean. Anything else (another model in a later release) gives None.
    """
    calibrated = getattr(model, "calibrated_classifiers_", None)
    if not calibrated or getattr(model, "method", None) != "sigmoid" or len(model.classes_) != 2:
        return None
    weights, intercepts, slopes, offsets = [], [], [], []
    for member in calibrated:
        estimator, calibrators = member.estimator, member.calibrators
        if len(calibrators) != 1 or estimator.coef_.shape[0] != 1:
            return None
        weights.append(np.asarray(estimator.coef_[0], dtype=np.float64))
        intercepts.append(float(estimator.intercept_[0]))
        slopes.append(float(calibrators[0].a_))
        offsets.append(float(calibrators[0].b_))
    weight_matrix = np.stack(weights, axis=1)  # features x members
    intercept, slope, offset = np.array(intercepts), np.array(slopes), np.array(offsets)

    def score(texts: Sequence[str]) -> np.ndarray:
        decision = np.asarray(vectorizer.transform(list(texts)) @ weight_matrix) + intercept  # texts x members
        return (1.0 / (1.0 + np.exp(slope * decision + offset))).mean(axis=1)

    return score
