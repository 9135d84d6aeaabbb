"""The policies file: the example parses, orgs override the default key by key, and each mistake names its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.safety.policies import (
    DEFAULT_MESSAGES,
    CategoryRule,
    PoliciesFileError,
    StagePolicy,
    parse_policies_file,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "policies.example.toml"
CLASSIFIERS = ("pii", "profanity", "injection", "llm_judge")

VALID = """\
version = "7"

[classifiers.llm_judge]
fail = "open"
timeout_ms = 1500

[default]
fail = "closed"

[default.input]
classifiers = ["pii", "injection"]
timeout_ms = 80
pii = { threshold = 0.6, action = "redact" }
prompt_injection = { action = "flag" }

[default.output]
classifiers = ["profanity"]
harassment = { threshold = 0.9, action = "replace", reason = "Withheld." }

[orgs.acme]
fail = "open"

[orgs.acme.input]
classifiers = ["pii", "injection", "llm_judge"]
prompt_injection = { threshold = 0.7, action = "refuse" }
"hate/threatening" = { threshold = 0.4, action = "refuse" }

[orgs.globex.output]
fail = "closed"
message = "Nope."
"""


def test_the_example_file_parses_with_every_classifier_known() -> None:
    policies = parse_policies_file(EXAMPLE.read_text(), source="policies.example.toml", known_classifiers=CLASSIFIERS)
    assert policies.version
    assert set(policies.classifier_names()) == set(CLASSIFIERS)
    assert set(policies.default.stages) == {"input", "context", "tool", "output"}


def test_the_default_policy_as_written() -> None:
    policies = parse_policies_file(VALID)
    default = policies.default
    assert (default.policy_id, default.version) == ("default", "7")
    assert default.stage("input") == StagePolicy(
        classifiers=("pii", "injection"),
        rules={"pii": CategoryRule(threshold=0.6, action="redact"), "prompt_injection": CategoryRule(threshold=0.5, action="flag")},
        fail="closed", timeout_s=0.08, message=DEFAULT_MESSAGES["input"],
    )
    assert default.stage("output").rules["harassment"] == CategoryRule(threshold=0.9, action="replace", reason="Withheld.")
    assert default.stage("output").timeout_s == 0.5


def test_a_stage_the_file_leaves_out_runs_nothing_and_allows() -> None:
    stage = parse_policies_file(VALID).default.stage("context")
    assert (stage.classifiers, dict(stage.rules)) == ((), {})


def test_an_org_overrides_the_default_key_by_key() -> None:
    acme = parse_policies_file(VALID).for_org("acme")
    assert acme.policy_id == "acme"
    stage = acme.stage("input")
    assert stage.classifiers == ("pii", "injection", "llm_judge")
    assert stage.timeout_s == 0.08  # the default's
    assert dict(stage.rules) == {
        "pii": CategoryRule(threshold=0.6, action="redact"),  # the default's
        "prompt_injection": CategoryRule(threshold=0.7, action="refuse"),  # acme's, over the default's
        "hate/threatening": CategoryRule(threshold=0.4, action="refuse"),
    }
    assert stage.fail == "open"  # acme's own `fail` beats the default's
    assert acme.stage("output").classifiers == ("profanity",)


def test_fail_modes_from_the_nearest_setting() -> None:
    policies = parse_policies_file(VALID)
    assert policies.default.fail_mode("input", "pii") == "closed"
    assert policies.default.fail_mode("input", "llm_judge") == "open"  # the classifier's own
    assert policies.for_org("acme").fail_mode("output", "profanity") == "open"
    globex = policies.for_org("globex")
    assert globex.fail_mode("output", "profanity") == "closed"
    assert globex.stage("output").message == "Nope."
    assert globex.fail_mode("input", "pii") == "closed"


def test_timeouts_per_classifier() -> None:
    assert parse_policies_file(VALID).for_org("acme").timeouts_s("input") == {"pii": 0.08, "injection": 0.08, "llm_judge": 1.5}


def test_an_org_without_a_policy_gets_the_default() -> None:
    policies = parse_policies_file(VALID)
    assert policies.for_org("initech") is policies.default


def test_a_file_with_only_a_version_allows_everything() -> None:
    policies = parse_policies_file('version = "1"')
    assert policies.default.stages == {}
    assert policies.classifier_names() == ()


@pytest.mark.parametrize(
    ("text", "line", "field", "problem"),
    [
        ('[default]\nfail = "open"\n', None, "", "version is required"),
        ("version = 3\n", 1, "version", "must be a non-empty string, got 3"),
        ('version = "  "\n', 1, "version", "must be a non-empty string"),
        ('version = "1"\nverison = "2"\n', 2, "verison", "unknown key; the file has version"),
        ('version = "1"\n[default]\nfail = "maybe"\n', 3, "default.fail", 'must be "open"'),
        ('version = "1"\n\n[default.inptu]\nfail = "open"\n', 3, "default.inptu", "unknown key; keys are fail, input, context, tool, output"),
        (
            'version = "1"\n[default.context]\nclassifiers = ["injection"]\nprompt_injection = { threshold = 0.5, action = "refuse" }\n',
            4, "default.context.prompt_injection.action",
            '"refuse" is not an action of the context stage; choose allow, flag, fence or drop',
        ),
        (
            'version = "1"\n\n[orgs.acme.output]\n# comment\n"harassment/threatening" = { threshold = 1.5, action = "replace" }\n',
            5, 'orgs.acme.output."harassment/threatening".threshold', "must be a number from 0 to 1, got 1.5",
        ),
        (
            'version = "1"\n[orgs.acme.output]\nharassment = { threshold = 0.5 }\n',
            3, "orgs.acme.output.harassment", "'action' is required; the output stage's actions are allow, flag, redact or replace",
        ),
        (
            'version = "1"\n[default.output]\nharassment = { action = "replace", treshold = 0.5 }\n',
            3, "default.output.harassment.treshold", "unknown key; keys are threshold, action, reason",
        ),
        ('version = "1"\n[default.input]\nprofanity = { action = "flag" }\n', 3, "default.input.profanity", "unknown key; keys are classifiers"),
        (
            'version = "1"\n[default.input]\nclassifiers = ["pii", "llm_jugde"]\n',
            3, "default.input.classifiers", "no classifier named 'llm_jugde'; classifiers are injection, llm_judge, pii, profanity",
        ),
        ('version = "1"\n[default.input]\nclassifiers = "pii"\n', 3, "default.input.classifiers", "must be a list of classifier names"),
        ('version = "1"\n[default.input]\nclassifiers = ["pii", "pii"]\n', 3, "default.input.classifiers", "names a classifier twice"),
        ('version = "1"\n[default.input]\ntimeout_ms = 0\n', 3, "default.input.timeout_ms", "must be a number of milliseconds > 0"),
        ('version = "1"\n[default.input]\ntimeout_ms = true\n', 3, "default.input.timeout_ms", "must be a number of milliseconds > 0, got true"),
        ('version = "1"\n[default.input]\nmessage = 5\n', 3, "default.input.message", "must be a string"),
        ('version = "1"\n[classifiers.judge]\nfail = "open"\n', 2, "classifiers.judge", "no classifier named 'judge'"),
        ('version = "1"\n[classifiers.pii]\nretries = 2\n', 3, "classifiers.pii.retries", "unknown key; keys are fail, timeout_ms"),
        ('version = "1"\norgs = 4\n', 2, "orgs", "must be a table, got 4"),
        (
            'version = "1"\n[orgs.acme.output]\nmessage = """\nmulti\nline\n"""\nharassment.threshold = 0.2\n',
            7, "orgs.acme.output.harassment", "'action' is required",
        ),
        ('version = "1\n', 1, "", "not valid TOML"),
    ],
)
def test_each_mistake_names_its_line_and_key(text: str, line: int | None, field: str, problem: str) -> None:
    with pytest.raises(PoliciesFileError) as caught:
        parse_policies_file(text, source="policies.toml", known_classifiers=CLASSIFIERS)
    error = caught.value
    assert (error.line, error.field) == (line, field), str(error)
    assert problem in error.problem, error.problem
    assert str(error).startswith(f"policies.toml:{line}: " if line else "policies.toml: ")


def test_without_known_classifiers_any_name_is_taken() -> None:
    policies = parse_policies_file('version = "1"\n[default.input]\nclassifiers = ["my_own"]\n')
    assert policies.classifier_names() == ("my_own",)


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(PoliciesFileError, match="not UTF-8"):
        parse_policies_file(b'version = "\xff"')
