"""The embedded store's engine is loaded when asked, before a server starts its threads, and only for chDB."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_LOAD = """
import sys
from turnlog.adapters import load_store_engine
from turnlog.settings import Settings
load_store_engine(Settings(store_url=sys.argv[1]))
print("chdb" in sys.modules)
"""


def loads_chdb(store_url: str) -> bool:
    done = subprocess.run([sys.executable, "-c", _LOAD, store_url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() == "True"


def test_the_chdb_store_loads_its_engine_and_a_clickhouse_server_loads_none(tmp_path: Path) -> None:
    assert loads_chdb(f"chdb://{tmp_path / 'read-models'}")
    assert not loads_chdb("clickhouse://default:secret@127.0.0.1:8123/turnlog")
