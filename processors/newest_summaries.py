"""The newest rolling summary of each conversation, as the prompt builder reads it at prompt time.

Summaries are written to the log (`conversation-summaries`, the summarizer's). A conversation's newest is read from
the log once, when a prompt first needs it; from then on `follow` keeps it current with the summaries written since,
so a prompt reads nothing. On Kafka every read was a lookup of the broker on the first token's path: two offset
requests, and a scan of the key's partition whenever any conversation sharing it had been summarized since, ~24 ms
a prompt at 16 streams on Tansu, one prompt after another in a batch (docs/benchmarks.md).
"""

import logging
from collections import OrderedDict

from events.conversation import ConversationSummarized
from events.topics import SUMMARIES
from kernel.codec import AvroCodec, UndecodableMessage
from kernel.keyed_state import DEFAULT_CAPACITY
from kernel.log import EventLog, LogRecord

logger = logging.getLogger(__name__)


class NewestSummaries:
    """Each held conversation's newest summary (None: none yet, or its user was erased) and the offset it was at.

    Without `follow` running, each call reads what was written after the summary it last saw.
    """

    def __init__(self, *, log: EventLog, codec: AvroCodec, capacity: int = DEFAULT_CAPACITY) -> None:
        self._log = log
        self._codec = codec
        self._capacity = capacity
        self._known: OrderedDict[str, tuple[ConversationSummarized | None, int]] = OrderedDict()
        self._loading: set[str] = set()  # read from the log now: what the follower sees of them meanwhile is kept
        self._following = False
        self._starts = 0  # how many times `follow` started: a read begun before a start is not kept

    async def follow(self) -> None:
        """Keep the held conversations' summaries current with those written from now on, until cancelled."""
        after = await self._log.end_offset(SUMMARIES)
        self._known.clear()  # read before this start: what came between the read and it would be missed
        self._starts += 1
        self._following = True
        try:
            # In the background: a summary may reach a prompt a little late (the summarizer's own pace is turns).
            async for record in self._log.follow(SUMMARIES, after=after, background=True):
                if record.key in self._known:
                    self._hold(record.key, self._newest(record), record.offset)
        finally:
            self._following = False

    @property
    def following(self) -> bool:
        """Whether `follow` is keeping the held summaries current."""
        return self._following

    async def of(self, conversation_id: str) -> ConversationSummarized | None:
        """The newest summary now (it may lag the history by the follower's delay: that is allowed)."""
        held = self._known.get(conversation_id)
        if held is not None and self._following and conversation_id not in self._loading:
            self._known.move_to_end(conversation_id)
            return held[0]
        summary, through = held or (None, -1)
        self._loading.add(conversation_id)
        self._hold(conversation_id, summary, through)  # the follower updates it while the read runs
        starts = self._starts
        try:
            records = await self._log.read(SUMMARIES, key=conversation_id, after=through)
        finally:
            self._loading.discard(conversation_id)
        if records:
            summary, through = self._newest(records[-1]), records[-1].offset
        if starts != self._starts:
            return summary  # the follower started during the read: what came between is read at the next call
        followed = self._known.get(conversation_id)
        if followed is not None and followed[1] > through:
            summary, through = followed
        self._hold(conversation_id, summary, through)
        return summary

    def _hold(self, conversation_id: str, summary: ConversationSummarized | None, offset: int) -> None:
        self._known[conversation_id] = (summary, offset)
        self._known.move_to_end(conversation_id)
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)

    def _newest(self, record: LogRecord) -> ConversationSummarized | None:
        try:
            payload = self._codec.decode(record.value).payload
        except UndecodableMessage as error:
            logger.error("undecodable summary at %d: %s", record.offset, error)
            return None
        return payload if isinstance(payload, ConversationSummarized) else None  # Erased: its user's key is gone
