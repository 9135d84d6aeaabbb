"""State folded per key from one topic of the log, cached, loaded from the log on a miss."""

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from kernel.codec import AvroCodec
from kernel.envelope import Envelope
from kernel.log import EventLog
from kernel.sealing import Erased
from kernel.snapshots import SnapshotSource, starting_point

State = TypeVar("State")
# The keys a cache keeps unless told otherwise (`turnlog serve --cached-conversations`).
DEFAULT_CAPACITY = 10_000


class KeyedStates(Generic[State]):
    """`fold(evolve, initial, events of key)`, kept for the most recently used keys.

    At most `capacity` keys, and with `weigh`, at most `budget` of their weight together (the characters of the
    transcripts a prompt builder keeps: a key count alone lets a few thousand long conversations fill the memory).
    The most recently used key is always kept. With `snapshots`, a miss starts from the key's saved snapshot and
    folds only the records after it (kernel/snapshots.py).
    """

    def __init__(
        self,
        *,
        log: EventLog,
        codec: AvroCodec,
        topic: str,
        initial: State,
        evolve: Callable[[State, Envelope], State],
        capacity: int = DEFAULT_CAPACITY,
        weigh: Callable[[State], int] | None = None,
        budget: int | None = None,
        snapshots: SnapshotSource[State] | None = None,
    ) -> None:
        if (weigh is None) != (budget is None):
            raise ValueError("KeyedStates: give `weigh` and `budget` together")
        self._log = log
        self._codec = codec
        self._topic = topic
        self._initial = initial
        self._evolve = evolve
        self._capacity = capacity
        self._weigh = weigh
        self._budget = budget
        self._snapshots = snapshots
        self._states: OrderedDict[str, State] = OrderedDict()
        self._weights: dict[str, int] = {}
        self._weight = 0

    async def get(self, key: str, *, before: int | None = None) -> State:
        """The state of `key`; on a miss, folded from the log's records of `key` with offset < `before` (from its
        snapshot on, with `snapshots`)."""
        if key in self._states:
            self._states.move_to_end(key)
            return self._states[key]
        start = await starting_point(
            log=self._log, topic=self._topic, key=key, initial=self._initial, snapshots=self._snapshots, before=before
        )
        state = start.state
        # A key that is an id has no record older than the id: the log's scan (a partition's, on Kafka) starts there.
        for record in await self._log.read(self._topic, key=key, after=start.through, before=before):
            envelope = self._codec.decode(record.value)
            if not isinstance(envelope.payload, Erased):  # crypto-shredded: folds as if it never was
                state = self._evolve(state, envelope)
        self.put(key, state)
        return state

    def put(self, key: str, state: State) -> None:
        self._states[key] = state
        self._states.move_to_end(key)
        if self._weigh is not None:
            weight = self._weigh(state)
            self._weight += weight - self._weights.get(key, 0)
            self._weights[key] = weight
        while len(self._states) > 1 and (
            len(self._states) > self._capacity or (self._budget is not None and self._weight > self._budget)
        ):
            evicted, _ = self._states.popitem(last=False)
            self._weight -= self._weights.pop(evicted, 0)

    def __contains__(self, key: str) -> bool:
        return key in self._states

    @property
    def weight(self) -> int:
        """The kept states' weight together (0 without `weigh`)."""
        return self._weight

    def apply(self, key: str, envelope: Envelope) -> State:
        """Fold one more event into a cached key (the caller has just loaded or is holding it)."""
        state = self._evolve(self._states.get(key, self._initial), envelope)
        self.put(key, state)
        return state

    def clear(self) -> None:
        self._states.clear()
        self._weights.clear()
        self._weight = 0
