"""glibc's arenas are capped in server processes (turnlog/allocator.py): counted by glibc's own malloc_info."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Threads that allocate at once, then the heaps glibc made for them (one `<heap nr=` per arena in malloc_info's XML).
_ARENAS_AFTER_THREADS = """
import ctypes, sys, threading
from turnlog.allocator import limit_malloc_arenas
print(limit_malloc_arenas() if sys.argv[1] == "capped" else None)

def allocate():
    for _ in range(2_000):
        kept = [bytearray(200) for _ in range(50)]

threads = [threading.Thread(target=allocate) for _ in range(16)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
out = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(out))
libc.fclose(ctypes.c_void_p(out))
"""


def arenas(tmp_path: Path, mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    info = tmp_path / f"{mode}.xml"
    done = subprocess.run(
        [sys.executable, "-c", _ARENAS_AFTER_THREADS, mode, str(info)], capture_output=True, text=True, timeout=120,
        env=env or {key: value for key, value in os.environ.items() if key != "MALLOC_ARENA_MAX"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), info.read_text().count("<heap nr=")


def test_a_server_process_allocates_from_at_most_two_arenas(tmp_path: Path) -> None:
    capped, count = arenas(tmp_path, "capped")
    assert capped == "True" and count <= 2, count
    _, uncapped = arenas(tmp_path, "uncapped")
    assert uncapped > 2, "the threads did not contend: the test shows nothing"


def test_an_operator_s_malloc_arena_max_is_left_as_set(tmp_path: Path) -> None:
    capped, count = arenas(tmp_path, "capped", env={**os.environ, "MALLOC_ARENA_MAX": "3"})
    assert capped == "False" and count <= 3, count
