"""Avro schemas (`*.avsc`) of every event and command; `history/` keeps superseded versions."""

from pathlib import Path

DIRECTORY = Path(__file__).parent
HISTORY_DIRECTORY = DIRECTORY / "history"
