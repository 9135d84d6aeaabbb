"""Heavy libraries imported on first use, one thread at a time.

transformers, sentence-transformers and accelerate import their submodules lazily and in circles. When two
threads import them at once (the embedding model loading for a search while an upload's chunker loads its
tokenizer), Python's import machinery hands one thread a partly initialised module and it fails with
"cannot import name ... from partially initialized module" (seen in a soak run: an upload failed for good).
Every first use goes through one lock; the attribute is fetched inside it, since fetching it is what
triggers a lazy package's real imports.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

__all__ = ["lazy_attribute"]

_IMPORTS = threading.RLock()  # reentrant: an import may start another through this module


def lazy_attribute(module: str, name: str) -> Any:
    """`from module import name`, serialised with every other call here."""
    with _IMPORTS:
        return getattr(importlib.import_module(module), name)
