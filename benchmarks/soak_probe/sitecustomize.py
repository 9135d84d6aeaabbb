"""Soak probe: what grows inside the server, sampled by a thread of its own (benchmarks/soak.py --probe).

`benchmarks/soak.py --probe FILE` puts this folder on the server's PYTHONPATH, so Python imports
it at start-up; it does nothing unless TURNLOG_SOAK_PROBE names the file to append to. Every
TURNLOG_SOAK_PROBE_S seconds (default 120) it writes one JSON line: resident memory, glibc's heap
(`mallinfo2`: in use, free in arenas, mmapped), Python's objects by type (the 25 most numerous),
chDB's own memory (its caches, the bytes it tracks and its jemalloc's totals, through a second session on the server's
data path, which shares the running engine), and with PYTHONTRACEMALLOC set, the 20 source lines
whose allocations grew most since the first sample. Only for benchmarks: the numbers cost the
server a pause of up to a few seconds per sample.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import json
import os
import re
import sys
import threading
import time
import tracemalloc
import types
import warnings
from collections import Counter


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _glibc_heap() -> dict:
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return {}
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return {"in_use_mib": info.uordblks / 2**20, "free_in_arenas_mib": info.fordblks / 2**20,
            "mmapped_mib": info.hblkhd / 2**20}


def _chdb_memory(sessions: list) -> dict:
    path = os.environ.get("TURNLOG_SOAK_PROBE_CHDB")
    if not path:
        return {}
    try:
        if not sessions:
            from chdb.session import Session
            sessions.append(Session(path))
        rows = sessions[0].query(
            "SELECT metric, value FROM system.metrics WHERE value != 0"
            " AND (metric ILIKE '%CacheBytes' OR metric IN ('MemoryTracking', 'MemoryTrackingUncorrected'))",
            "JSONCompact").bytes()
        memory = {metric: int(value) / 2**20 for metric, value in json.loads(rows)["data"]}  # MiB
        # chDB's own allocator (jemalloc, apart from the process's malloc): what it holds, beyond what is tracked.
        stats = sessions[0].query("SELECT stats FROM system.jemalloc_stats", "TSVRaw").bytes().decode()
        totals = re.search(r"Allocated: (\d+), active: \d+, metadata: (\d+).*?resident: (\d+), mapped: (\d+)", stats)
        if totals:
            for name, value in zip(("allocated", "metadata", "resident", "mapped"), totals.groups()):
                memory[f"jemalloc_{name}"] = int(value) / 2**20
        return memory
    except Exception as error:  # a diagnostic, never the end of the server
        return {"error": repr(error)}


def _deep_size(root: object, seen: set[int]) -> int:
    # Containers and what they hold, each object once: modules, types and functions are shared, not owned.
    size, stack = 0, [root]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, (type, types.ModuleType, types.FunctionType)):
            continue
        seen.add(id(item))
        size += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset, collections.deque)):
            stack.extend(item)
        elif isinstance(item, types.MappingProxyType):
            stack.extend(item.values())
        elif hasattr(item, "__dict__") or hasattr(item, "__slots__"):
            stack.extend(gc.get_referents(item))
    return size


def _largest_containers(objects: list) -> list[dict]:
    # The 12 biggest dicts, lists, sets and deques by length, each named by the class of an object holding it.
    with warnings.catch_warnings():  # isinstance on some deprecated objects (torch's) warns
        warnings.simplefilter("ignore")
        containers = [item for item in objects if isinstance(item, (dict, list, set, collections.deque)) and len(item) >= 300]
    largest = []
    for item in sorted(containers, key=len, reverse=True)[:12]:
        owners = [type(owner).__qualname__ for owner in gc.get_referrers(item) if owner is not objects and owner is not containers][:3]
        largest.append({"type": type(item).__name__, "len": len(item), "held_by": owners})
    return largest


def _keyed_states(objects: list) -> list[dict]:
    # Every KeyedStates cache (kernel/keyed_state.py): whose it is, how many keys, and their deep size.
    found, seen = [], set()
    for item in objects:
        if type(item).__name__ == "KeyedStates":
            size = _deep_size(getattr(item, "_states", {}), seen)
            found.append({"topic": getattr(item, "_topic", "?"), "keys": len(getattr(item, "_states", {})),
                          "mib": round(size / 2**20, 2)})
    return found


def _sample(started: float, first: list, sessions: list) -> dict:
    began = time.monotonic()
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    objects = gc.get_objects()
    counts = Counter(type(item).__name__ for item in objects)
    sample = {
        "t_s": round(time.monotonic() - started, 1),
        "rss_mib": int(status["VmRSS"].split()[0]) / 1024,
        "rss_anon_mib": int(status["RssAnon"].split()[0]) / 1024,
        "threads": int(status["Threads"]),
        "glibc": _glibc_heap(),
        "python_objects": sum(counts.values()),  # the GC's: containers, not strings or numbers
        "python_blocks": sys.getallocatedblocks(),  # every live block of Python's small-object allocator
        "python_types": dict(counts.most_common(25)),
        "chdb": _chdb_memory(sessions),
        "keyed_states": _keyed_states(objects),
        "largest_containers": _largest_containers(objects),
    }
    del objects
    sample["probe_s"] = round(time.monotonic() - began, 2)  # how long the sample held the server up (GIL)
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        sample["traced_mib"] = tracemalloc.get_traced_memory()[0] / 2**20
        if not first:
            first.append(snapshot)
        else:
            sample["grown_since_first"] = [
                {"where": " <- ".join(f"{frame.filename}:{frame.lineno}" for frame in reversed(stat.traceback)),
                 "kib": round(stat.size_diff / 1024), "count": stat.count_diff}
                for stat in snapshot.compare_to(first[0], "lineno")[:20]
            ]
    return sample


def _probe(out: str, every_s: float) -> None:
    started, first, sessions = time.monotonic(), [], []
    time.sleep(every_s)  # the server opens its chDB session first (the probe's shares that engine)
    while True:
        try:
            sample = _sample(started, first, sessions)
        except Exception as error:
            sample = {"error": repr(error)}
        with open(out, "a", encoding="utf-8") as file:
            file.write(json.dumps(sample) + "\n")
        time.sleep(every_s)


if os.environ.get("TURNLOG_SOAK_PROBE"):
    # Taken out of the environment, so processes the server starts do not probe too.
    threading.Thread(
        target=_probe, args=(os.environ.pop("TURNLOG_SOAK_PROBE"), float(os.environ.pop("TURNLOG_SOAK_PROBE_S", "120"))),
        name="soak-probe", daemon=True,
    ).start()
