"""When an id was made: turnlog's ids are `<prefix>_<ULID>` (tagged ones end `_<tag>`), and a ULID begins with its
minting time in milliseconds. No record keyed by an id can be older than the id, which lets a log without an index
by key start a scan for one where it was made (the Kafka log's `read`) instead of at the start of its partition.
"""

import re
from datetime import datetime, timedelta

from ulid import ULID

# An id made by turnlog, tagged (`api/scoped_ids.py`) or not; anything else (an org id, a name) says nothing.
_ID = re.compile(r"^[a-z]+_(?P<ulid>[0-9A-HJKMNP-TV-Z]{26})(?:_[a-z2-7]{8})?$")

# How far behind the minting process's clock another process's may be: records keyed by an id are looked for from
# its minting time less this (minutes of a partition, not its days of retention). Hosts must agree within it (NTP).
CLOCK_SKEW = timedelta(minutes=5)


def minted_at(resource_id: str) -> datetime | None:
    """When an id (tagged or not) was made, from its ULID; None for a key that is not an id turnlog makes."""
    match = _ID.match(resource_id)
    if match is None:
        return None
    try:
        return ULID.from_str(match["ulid"]).datetime
    except ValueError:
        return None


def written_since(resource_id: str) -> datetime | None:
    """No record keyed by this id was written before this (its minting time less the clock skew); None: no bound."""
    minted = minted_at(resource_id)
    if minted is None or minted.timestamp() <= CLOCK_SKEW.total_seconds():
        return None  # no bound from an id made up with a zero time (a bound before 1970 is none a log takes)
    return minted - CLOCK_SKEW
