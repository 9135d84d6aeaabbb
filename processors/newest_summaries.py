"""The newest rolling summary of each conversation, as the prompt builder reads it at prompt time.

Summaries are read from the log (`conversation-summaries`, the summarizer's), and on Kafka a read by key scans the
key's partition from the conversation id's minting time: for a long conversation, every summary its partition took
since, on every prompt. Each conversation's newest summary is kept with its offset instead, so a prompt reads only
after it: what the partition took since the conversation's newest summary, which an active conversation renews every
few turns.
"""

from collections import OrderedDict

from events.conversation import ConversationSummarized
from events.topics import SUMMARIES
from kernel.codec import AvroCodec
from kernel.keyed_state import DEFAULT_CAPACITY
from kernel.log import EventLog


class NewestSummaries:
    """Each conversation's newest summary (None: none yet, or its user was erased) and the offset it was read at."""

    def __init__(self, *, log: EventLog, codec: AvroCodec, capacity: int = DEFAULT_CAPACITY) -> None:
        self._log = log
        self._codec = codec
        self._capacity = capacity
        self._known: OrderedDict[str, tuple[ConversationSummarized | None, int]] = OrderedDict()

    async def of(self, conversation_id: str) -> ConversationSummarized | None:
        """The newest summary now (it may lag the history: that is allowed)."""
        summary, through = self._known.pop(conversation_id, (None, -1))
        records = await self._log.read(SUMMARIES, key=conversation_id, after=through)
        if records:
            payload = self._codec.decode(records[-1].value).payload
            summary = payload if isinstance(payload, ConversationSummarized) else None  # Erased: its user's key is gone
            through = records[-1].offset
        self._known[conversation_id] = (summary, through)
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)
        return summary
