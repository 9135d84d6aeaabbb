"""Envelopes decoded lately, by their bytes: a record read by several consumers of one process is decoded once.

A token delta is read by the stream that shows it, the read models, the ledgers and the watchdog, each with a
consumer of its own; decoding it (Avro, then opening its sealed payload) was about a fifth of the server's CPU
while streaming. The same bytes always decode to the same envelope, and envelopes are frozen, so consumers can
share one. The memo holds the most recent entries within a budget of encoded bytes, so a prompt of many
kilobytes does not keep thousands of deltas out, and the memory it holds stays small.

An entry remembers the key its payload was sealed under: a hit is served only while that key still exists,
so an erasure (crypto-shredding) is seen at once, as by a fresh decode.
"""

import threading
from collections import OrderedDict
from collections.abc import Callable

from kernel.envelope import Envelope
from kernel.sealing import Subject

# Encoded bytes the memo keeps (the decoded objects take a few times more): some thousands of deltas, enough for
# every consumer of a busy process to catch up with what its neighbours just decoded.
BUDGET_BYTES = 2 * 1024 * 1024


class RecentDecodes:
    """A least-recently-used map of encoded envelope -> (envelope, the subject its payload was sealed for)."""

    def __init__(self, *, budget_bytes: int = BUDGET_BYTES) -> None:
        self._budget = budget_bytes
        self._held = 0
        self._entries: OrderedDict[bytes, tuple[Envelope, Subject | None]] = OrderedDict()
        self._lock = threading.Lock()  # decodes also run on worker threads

    def get(self, data: bytes, *, key_exists: Callable[[Subject], bool]) -> Envelope | None:
        """The envelope `data` decoded to, if remembered and its sealing key (if any) still exists."""
        with self._lock:
            entry = self._entries.get(data)
            if entry is None:
                return None
            self._entries.move_to_end(data)
        envelope, subject = entry
        if subject is not None and not key_exists(subject):
            self.forget(data)  # erased since: decoded afresh, it opens to `Erased`
            return None
        return envelope

    def put(self, data: bytes, envelope: Envelope, subject: Subject | None) -> None:
        if len(data) > self._budget // 8:
            return  # one huge record would push out everything else
        with self._lock:
            if data in self._entries:
                return
            self._entries[data] = (envelope, subject)
            self._held += len(data)
            while self._held > self._budget:
                evicted, _ = self._entries.popitem(last=False)
                self._held -= len(evicted)

    def forget(self, data: bytes) -> None:
        with self._lock:
            if self._entries.pop(data, None) is not None:
                self._held -= len(data)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def held_bytes(self) -> int:
        return self._held
