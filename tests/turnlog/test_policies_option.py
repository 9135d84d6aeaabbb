"""`--policies`: a safety policies file is read at start; a broken one stops `serve` with one line naming its line."""

import os
from pathlib import Path

import pytest

from turnlog import cli
from turnlog.adapters import load_policies
from turnlog.extras import required_extras
from turnlog.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "policies.example.toml"
OFFLINE = """version = "1"
[default.input]
classifiers = ["injection"]
prompt_injection = { action = "flag" }
"""


@pytest.fixture(autouse=True)
def no_turnlog_environment(monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith("TURNLOG_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(cli, "_serve", lambda arguments, settings: pytest.fail("the server started"))


def failure(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv))
    assert exited.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_broken_policies_file_stops_serve_naming_the_line(tmp_path: Path, capsys) -> None:
    policies = tmp_path / "policies.toml"
    policies.write_text('version = "1"\n\n[default.output]\nclassifiers = ["injection"]\nharassment = { action = "refuse" }\n')
    error = failure(capsys, "serve", "--data-dir", str(tmp_path), "--engine", "scripted", "--policies", str(policies))
    assert error == (
        f"turnlog serve: error: {policies}:5: default.output.harassment.action: \"refuse\" is not an action of the"
        " output stage; choose allow, flag, redact or replace"
    )


def test_an_unknown_classifier_or_a_judge_with_nowhere_to_ask_stops_serve(tmp_path: Path, capsys, monkeypatch) -> None:
    policies = tmp_path / "policies.toml"
    policies.write_text('version = "1"\n[default.input]\nclassifiers = ["piii"]\n')
    assert "policies.toml:3: default.input.classifiers: no classifier named 'piii'" in failure(
        capsys, "serve", "--engine", "scripted", "--policies", str(policies)
    )
    error = failure(capsys, "serve", "--engine", "scripted", "--policies", str(EXAMPLE))
    assert "runs llm_judge" in error and "--judge-url" in error
    monkeypatch.setenv("TURNLOG_POLICIES", str(tmp_path / "missing.toml"))
    assert "cannot read the policies file" in failure(capsys, "serve", "--engine", "scripted")


def test_the_example_policies_load_with_a_judge_and_nothing_loads_without_a_file() -> None:
    assert load_policies(Settings()) is None
    policies = load_policies(Settings(policies_file=EXAMPLE, judge_url="http://judge:8000/v1", judge_model="llama-guard"))
    assert policies is not None and policies.classifier_names() == ("injection", "llm_judge", "pii", "profanity")


def test_the_safety_extra_is_needed_only_by_roles_that_check_with_its_classifiers(tmp_path: Path) -> None:
    offline = tmp_path / "offline.toml"
    offline.write_text(OFFLINE)
    judged = Settings(policies_file=EXAMPLE, judge_url="http://judge:8000/v1", judge_model="llama-guard", engine="scripted")

    def extras(settings: Settings, *, api: bool = False) -> set[tuple[str, tuple[str, ...]]]:
        return {(need.extra, need.modules) for need in required_extras(settings, api=api) if need.extra == "safety"}

    assert extras(judged) == {("safety", ("presidio_analyzer", "profanity_check"))}
    assert extras(Settings(policies_file=offline, engine="scripted")) == set()  # injection heuristics: no extra
    assert extras(Settings(policies_file=EXAMPLE, roles=("projector",), engine="scripted"), api=True) == set()
    assert extras(Settings(engine="scripted")) == set()


def test_a_process_that_only_reads_decisions_needs_no_judge() -> None:
    assert load_policies(Settings(policies_file=EXAMPLE, roles=("projector",))) is not None
    with pytest.raises(ValueError, match="runs llm_judge"):
        load_policies(Settings(policies_file=EXAMPLE, roles=("inference",)))
