"""How readers build sections: paragraphs gathered under headings, text and titles cleaned for the index."""

from __future__ import annotations

import re
from collections.abc import Iterable

from processors.ingestion.extraction.document import Section

__all__ = ["SectionBuilder", "clean_text", "clean_title", "first_line"]

_TITLE_MAX_CHARS = 200


class SectionBuilder:
    """Collects paragraphs; a heading closes the current section and names the next one."""

    def __init__(self) -> None:
        self._sections: list[Section] = []
        self._paragraphs: list[str] = []
        self._heading: str | None = None
        self.first_heading: str | None = None

    def heading(self, text: str) -> None:
        heading = clean_title(text)
        if not heading:
            return
        self._flush()
        self._heading = heading
        self.first_heading = self.first_heading or heading

    def paragraph(self, text: str) -> None:
        cleaned = clean_text(text)
        if cleaned:
            self._paragraphs.append(cleaned)

    def build(self) -> tuple[Section, ...]:
        self._flush()
        return tuple(self._sections)

    def _flush(self) -> None:
        # A heading with nothing under it makes no section: it still names the ones that follow.
        if self._paragraphs:
            self._sections.append(Section(text="\n\n".join(self._paragraphs), heading=self._heading))
            self._paragraphs = []


# C0 and C1 control characters except tab, newline and form feed; lone surrogates (from broken PDF
# font maps) would fail later, when the text is encoded as UTF-8 for the log.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def clean_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    text = _CONTROL.sub("", text)
    text = re.sub(r"[ \t\v]+\n", "\n", text)  # trailing blanks on each line
    text = re.sub(r"\n[ \t\v]*\n(?:[ \t\v]*\n)+", "\n\n", text)  # at most one blank line between paragraphs
    return text.strip()


def clean_title(text: str | None) -> str | None:
    if not text:
        return None
    title = " ".join(_CONTROL.sub("", text).split())
    if len(title) > _TITLE_MAX_CHARS:
        title = title[: _TITLE_MAX_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return title or None


def first_line(sections: Iterable[Section]) -> str:
    for section in sections:
        for line in section.text.splitlines():
            title = clean_title(line)
            if title:
                return title
    return ""
