"""PII by Presidio's pattern recognizers, with no spaCy model to download (`redaction.py` replaces what they find).

Presidio's analyzer normally loads a trained spaCy pipeline (`en_core_web_lg`, ~600 MB, fetched on
first use). Here it gets a blank English spaCy tokenizer instead (shipped inside spaCy) whose lemmas
are the lower-cased tokens: enough for Presidio's context words ("phone", "ssn", "card" near a match
raise its score), with no NER, so names, addresses and places are not found. What is found: e-mail
addresses, phone numbers (national formats of `phone_regions`, and any international `+` number),
credit cards (Luhn-checked), IBANs (checksum-checked), IP addresses, US SSN and ITIN, UK NINO and NHS
numbers, crypto wallet addresses.

Importing Presidio takes seconds (it pulls spaCy, and transformers and torch when they are installed):
`PiiClassifier.load()` builds the analyzer on a worker thread, once, at start. Each classification runs
on a worker thread too (1-5 ms for a few thousand characters; phone matching is the costly part, so
keep `phone_regions` short).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from processors.safety.classifiers import Classification, Span

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine

CATEGORY = "pii"
DEFAULT_ENTITIES = (
    "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS",
    "US_SSN", "US_ITIN", "UK_NINO", "UK_NHS", "CRYPTO",
)
# Each region is one more pass of libphonenumber's matcher over the text; `+<country code>` numbers are found anyway.
DEFAULT_PHONE_REGIONS = ("US", "GB")
LANGUAGE = "en"
_WARM_UP_TEXT = (
    "Call my phone 212-555-0123 or +44 20 7946 0958, mail ana@example.com, card 4111 1111 1111 1111, "
    "IBAN GB82 WEST 1234 5698 7654 32, host 192.168.1.20, ssn 536-22-1234."
)


class PiiClassifier:
    """Scores `pii` as the highest score of any entity found; `spans` are the entities, `labels` their kinds."""

    def __init__(self, *, analyzer: AnalyzerEngine, entities: Sequence[str] = DEFAULT_ENTITIES, name: str = "pii") -> None:
        self.name = name
        self._analyzer = analyzer
        self._entities = list(entities)

    @classmethod
    async def load(
        cls,
        *,
        entities: Sequence[str] = DEFAULT_ENTITIES,
        phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
        context_words: bool = True,
        name: str = "pii",
    ) -> PiiClassifier:
        """Builds the analyzer on a worker thread (Presidio's import alone takes seconds): call it at start."""
        analyzer = await asyncio.to_thread(
            build_analyzer, entities=entities, phone_regions=phone_regions, context_words=context_words
        )
        return cls(analyzer=analyzer, entities=entities, name=name)

    def scan(self, text: str) -> Classification:
        results = self._analyzer.analyze(text=text, language=LANGUAGE, entities=self._entities)
        spans = tuple(
            sorted(
                (Span(start=result.start, end=result.end, label=result.entity_type, score=round(float(result.score), 6))
                 for result in results),
                key=lambda span: (span.start, span.end),
            )
        )
        return Classification(
            classifier=self.name,
            scores={CATEGORY: max((span.score for span in spans), default=0.0)},
            spans=spans,
            labels=tuple(sorted({span.label for span in spans})),
        )

    async def classify(self, text: str) -> Classification:
        return await asyncio.to_thread(self.scan, text)


def build_analyzer(
    *, entities: Sequence[str] = DEFAULT_ENTITIES, phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS, context_words: bool = True
) -> AnalyzerEngine:
    """A Presidio analyzer with only the pattern recognizers for `entities`, offline (blocking: seconds on first call)."""
    import tldextract
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        CryptoRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        NhsRecognizer,
        PhoneRecognizer,
        UkNinoRecognizer,
        UsItinRecognizer,
        UsSsnRecognizer,
    )

    # Presidio's e-mail check asks tldextract for the domain's public suffix, and tldextract's default
    # fetches the suffix list from the internet on first use: this one reads the snapshot it ships.
    offline_suffixes = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return offline_suffixes(pattern_text).fqdn != ""

    available = {
        "EMAIL_ADDRESS": lambda: OfflineEmailRecognizer(),
        "PHONE_NUMBER": lambda: PhoneRecognizer(supported_regions=tuple(phone_regions)),
        "CREDIT_CARD": CreditCardRecognizer,
        "IBAN_CODE": IbanRecognizer,
        "IP_ADDRESS": IpRecognizer,
        "US_SSN": UsSsnRecognizer,
        "US_ITIN": UsItinRecognizer,
        "UK_NINO": UkNinoRecognizer,
        "UK_NHS": NhsRecognizer,
        "CRYPTO": CryptoRecognizer,
    }
    unknown = [entity for entity in entities if entity not in available]
    if unknown:
        raise ValueError(f"no pattern recognizer for {', '.join(unknown)}; choose from {', '.join(available)}")
    registry = RecognizerRegistry(recognizers=[available[entity]() for entity in entities], supported_languages=[LANGUAGE])
    nlp_engine = _tokenizer_engine() if context_words else NoOpNlpEngine(models=[{"lang_code": LANGUAGE, "model_name": "none"}])
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=[LANGUAGE])
    # The first analysis loads what the recognizers load lazily (libphonenumber's region metadata): tens of
    # milliseconds that belong to the start, not to the first user's turn.
    analyzer.analyze(text=_WARM_UP_TEXT, language=LANGUAGE, entities=list(entities))
    return analyzer


def _tokenizer_engine():
    """Presidio's spaCy engine over `spacy.blank("en")`: tokens, and lower-cased tokens as lemmas, for context words."""
    import spacy
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    class BlankSpacyNlpEngine(SpacyNlpEngine):
        def load(self) -> None:
            self.nlp = {LANGUAGE: spacy.blank(LANGUAGE)}

        def process_text(self, text: str, language: str):
            document = self.nlp[language](text)
            for token in document:
                token.lemma_ = token.lower_  # a blank pipeline has no lemmatizer; the lower-cased word matches context words
            return self._doc_to_nlp_artifact(document, language)

    engine = BlankSpacyNlpEngine(models=[{"lang_code": LANGUAGE, "model_name": "blank"}])
    engine.load()
    return engine
