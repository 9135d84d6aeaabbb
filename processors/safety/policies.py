"""The policies file: per org, per stage, which classifiers run and what each category over its threshold does.

`parse_policies_file` reads it (TOML, see `policies.example.toml`) into `SafetyPolicies`; anything wrong
stops with `PoliciesFileError`, which names the file, the line and the key at fault
(`policies.toml:14: orgs.acme.output.harassment.action: 'refuse' is not an action of the output stage; ...`),
so `serve` can refuse to start on it. A `[default]` policy applies to every org; `[orgs.<org id>]`
overrides it key by key (a stage's classifiers, fail mode, timeout and message; each category's rule).
The file's `version` is required and is recorded on every decision, with the org whose policy decided.
A classifier that fails or times out follows the fail mode: `[classifiers.<name>].fail` if set, else the
stage's (`fail` in the org's stage, the org, the default's stage, the default; "closed" if none says).
Nothing here reads a file, the environment or a clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, get_args

from events.safety import SAFETY_CATEGORIES
from kernel.config_files import ConfigFileError, read_toml

Stage = Literal["input", "context", "tool", "output"]
STAGES: tuple[Stage, ...] = get_args(Stage)
Action = Literal["allow", "flag", "redact", "fence", "drop", "refuse", "replace", "stop"]
FailMode = Literal["open", "closed"]
FAIL_MODES: tuple[FailMode, ...] = get_args(FailMode)

# The actions a policy may ask for at each stage, mildest first. While the answer streams, the output
# stage's `replace` becomes `stop` (the run stops; the stored answer is the fallback).
STAGE_ACTIONS: Mapping[Stage, tuple[Action, ...]] = MappingProxyType({
    "input": ("allow", "flag", "redact", "refuse"),
    "context": ("allow", "flag", "fence", "drop"),
    "tool": ("allow", "flag", "refuse"),
    "output": ("allow", "flag", "redact", "replace"),
})
DEFAULT_THRESHOLD = 0.5
DEFAULT_TIMEOUT_MS = 500.0
DEFAULT_MESSAGES: Mapping[Stage, str] = MappingProxyType({
    "input": "I can't help with that request.",
    "context": "",
    "tool": "That tool call was blocked by the safety policy.",
    "output": "I can't share that answer.",
})
DEFAULT_POLICY_ID = "default"


class PoliciesFileError(ConfigFileError):
    """A policies file that cannot be used: `source`, `line` (1-based, when known), `field`, `problem`."""


@dataclass(frozen=True, kw_only=True)
class CategoryRule:
    """A category at or over `threshold` asks for `action`; `reason` is what the user sees if that refuses or replaces."""

    threshold: float = DEFAULT_THRESHOLD
    action: Action
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class StagePolicy:
    """One stage of one policy: its classifiers, its rules per category, and what a failed classifier means."""

    classifiers: tuple[str, ...] = ()
    rules: Mapping[str, CategoryRule] = field(default_factory=dict)
    fail: FailMode = "closed"
    timeout_s: float = DEFAULT_TIMEOUT_MS / 1000
    message: str = ""  # shown when the stage refuses, replaces or stops and the rule has no reason of its own


@dataclass(frozen=True, kw_only=True)
class ClassifierSettings:
    """A classifier's own fail mode and timeout, over any stage's (a remote judge is slower and less sure than a regex)."""

    fail: FailMode | None = None
    timeout_s: float | None = None


@dataclass(frozen=True, kw_only=True)
class SafetyPolicy:
    """The policy one org is checked by (`policy_id`: the org, or "default"), at the file's version."""

    policy_id: str
    version: str
    stages: Mapping[Stage, StagePolicy]
    classifier_settings: Mapping[str, ClassifierSettings] = field(default_factory=dict)

    def stage(self, stage: Stage) -> StagePolicy:
        """The stage's policy; a stage the file does not mention runs nothing and allows everything."""
        return self.stages.get(stage) or StagePolicy(message=DEFAULT_MESSAGES[stage])

    def fail_mode(self, stage: Stage, classifier: str) -> FailMode:
        settings = self.classifier_settings.get(classifier)
        return settings.fail if settings is not None and settings.fail is not None else self.stage(stage).fail

    def timeouts_s(self, stage: Stage) -> dict[str, float]:
        """Each of the stage's classifiers' timeout: its own if set, else the stage's."""
        stage_policy = self.stage(stage)
        return {
            name: settings.timeout_s
            if (settings := self.classifier_settings.get(name)) is not None and settings.timeout_s is not None
            else stage_policy.timeout_s
            for name in stage_policy.classifiers
        }


@dataclass(frozen=True, kw_only=True)
class SafetyPolicies:
    """Every org's policy: the default, and the orgs that override it."""

    version: str
    default: SafetyPolicy
    orgs: Mapping[str, SafetyPolicy] = field(default_factory=dict)

    def for_org(self, org_id: str) -> SafetyPolicy:
        return self.orgs.get(org_id, self.default)

    def classifier_names(self) -> tuple[str, ...]:
        """Every classifier some stage of some policy runs: the ones to build at start."""
        policies = (self.default, *self.orgs.values())
        names = {name for policy in policies for stage in policy.stages.values() for name in stage.classifiers}
        return tuple(sorted(names))


# --- the file ---------------------------------------------------------------------------------------

_STAGE_KEYS = ("classifiers", "fail", "timeout_ms", "message")
_RULE_KEYS = ("threshold", "action", "reason")
_CLASSIFIER_KEYS = ("fail", "timeout_ms")
_CATEGORIES = frozenset(SAFETY_CATEGORIES)

Path = tuple[str, ...]


class _Invalid(Exception):
    """A problem at a key path of the document, on its way to becoming a `PoliciesFileError`."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


@dataclass(frozen=True, kw_only=True)
class _StageTable:
    """A stage table as written: None where a key is not set (an org's falls back to the default's)."""

    classifiers: tuple[str, ...] | None = None
    fail: FailMode | None = None
    timeout_s: float | None = None
    message: str | None = None
    rules: Mapping[str, CategoryRule] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class _PolicyTable:
    fail: FailMode | None = None
    stages: Mapping[Stage, _StageTable] = field(default_factory=dict)


def parse_policies_file(
    text: str | bytes, *, source: str = "policies.toml", known_classifiers: Collection[str] | None = None
) -> SafetyPolicies:
    """A policies file's policies; `PoliciesFileError` names the line and the key at fault.

    With `known_classifiers`, a classifier name that is not among them is an error too (a typo would
    otherwise leave a stage unchecked).
    """
    text, document = read_toml(text, source=source, error=PoliciesFileError)
    try:
        return _policies(document, known_classifiers)
    except _Invalid as invalid:
        raise PoliciesFileError(
            source=source, line=_line_of(text, invalid.path), field=_dotted(invalid.path), problem=invalid.problem
        ) from None


def _policies(document: Mapping[str, object], known_classifiers: Collection[str] | None) -> SafetyPolicies:
    unknown = sorted(set(document) - {"version", "classifiers", "default", "orgs"})
    if unknown:
        raise _Invalid((unknown[0],), "unknown key; the file has version, [classifiers.<name>], [default] and [orgs.<org id>]")
    if "version" not in document:
        raise _Invalid((), 'version is required: the policy version every decision records, e.g. version = "2026-12-04.1"')
    version = document["version"]
    if not isinstance(version, str) or not version.strip():
        raise _Invalid(("version",), f"must be a non-empty string, got {_toml_value(version)}")

    def check_name(name: str, path: Path) -> None:
        if known_classifiers is not None and name not in known_classifiers:
            raise _Invalid(path, f"no classifier named {name!r}; classifiers are {', '.join(sorted(known_classifiers))}")

    settings: dict[str, ClassifierSettings] = {}
    for name, table in _table(document, ("classifiers",)).items():
        path = ("classifiers", name)
        check_name(name, path)
        values = _mapping(table, path)
        _only(values, _CLASSIFIER_KEYS, path)
        settings[name] = ClassifierSettings(
            fail=_fail(values["fail"], (*path, "fail")) if "fail" in values else None,
            timeout_s=_timeout_s(values["timeout_ms"], (*path, "timeout_ms")) if "timeout_ms" in values else None,
        )

    default_table = _policy_table(_table(document, ("default",)), ("default",), check_name)
    default = _resolve(DEFAULT_POLICY_ID, version, default_table, None, settings)
    orgs = {
        org_id: _resolve(
            org_id, version, _policy_table(_mapping(table, ("orgs", org_id)), ("orgs", org_id), check_name), default_table, settings
        )
        for org_id, table in _table(document, ("orgs",)).items()
    }
    return SafetyPolicies(version=version, default=default, orgs=MappingProxyType(orgs))


def _policy_table(table: Mapping[str, object], path: Path, check_name: Callable[[str, Path], None]) -> _PolicyTable:
    fail = None
    stages: dict[Stage, _StageTable] = {}
    for key, value in table.items():
        if key == "fail":
            fail = _fail(value, (*path, key))
        elif key in STAGES:
            stages[key] = _stage_table(key, _mapping(value, (*path, key)), (*path, key), check_name)  # type: ignore[index]
        else:
            raise _Invalid((*path, key), f"unknown key; keys are fail, {', '.join(STAGES)}")
    return _PolicyTable(fail=fail, stages=stages)


def _stage_table(stage: Stage, table: Mapping[str, object], path: Path, check_name: Callable[[str, Path], None]) -> _StageTable:
    values: dict[str, object] = {}
    rules: dict[str, CategoryRule] = {}
    for key, value in table.items():
        where = (*path, key)
        if key == "classifiers":
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise _Invalid(where, f'must be a list of classifier names, e.g. ["pii", "injection"], got {_toml_value(value)}')
            if len(set(value)) != len(value):
                raise _Invalid(where, "names a classifier twice")
            for name in value:
                check_name(name, where)
            values["classifiers"] = tuple(value)
        elif key == "fail":
            values["fail"] = _fail(value, where)
        elif key == "timeout_ms":
            values["timeout_s"] = _timeout_s(value, where)
        elif key == "message":
            if not isinstance(value, str):
                raise _Invalid(where, f"must be a string, got {_toml_value(value)}")
            values["message"] = value
        elif key in _CATEGORIES:
            rules[key] = _rule(stage, _mapping(value, where), where)
        else:
            raise _Invalid(where, f"unknown key; keys are {', '.join(_STAGE_KEYS)}, or a category: {', '.join(SAFETY_CATEGORIES)}")
    return _StageTable(rules=rules, **values)  # type: ignore[arg-type]


def _rule(stage: Stage, table: Mapping[str, object], path: Path) -> CategoryRule:
    _only(table, _RULE_KEYS, path)
    if "action" not in table:
        raise _Invalid(path, f"'action' is required; the {stage} stage's actions are {_choices(STAGE_ACTIONS[stage])}")
    action = table["action"]
    if action not in STAGE_ACTIONS[stage]:
        raise _Invalid(
            (*path, "action"), f"{_toml_value(action)} is not an action of the {stage} stage; choose {_choices(STAGE_ACTIONS[stage])}"
        )
    threshold = table.get("threshold", DEFAULT_THRESHOLD)
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
        or not 0.0 <= threshold <= 1.0
    ):
        raise _Invalid((*path, "threshold"), f"must be a number from 0 to 1, got {_toml_value(threshold)}")
    reason = table.get("reason", "")
    if not isinstance(reason, str):
        raise _Invalid((*path, "reason"), f"must be a string, got {_toml_value(reason)}")
    return CategoryRule(threshold=float(threshold), action=action, reason=reason)  # type: ignore[arg-type]


def _resolve(
    policy_id: str, version: str, own: _PolicyTable, base: _PolicyTable | None, settings: Mapping[str, ClassifierSettings]
) -> SafetyPolicy:
    """A policy from its own table over the default's: the nearer a key is set to the org's stage, the more it counts."""
    stages: dict[Stage, StagePolicy] = {}
    for stage in STAGES:
        own_stage, base_stage = own.stages.get(stage), base.stages.get(stage) if base is not None else None
        if own_stage is None and base_stage is None:
            continue
        fail = (
            _first("fail", own_stage) or own.fail or _first("fail", base_stage) or (base.fail if base is not None else None) or "closed"
        )
        timeout_s = _first("timeout_s", own_stage, base_stage)
        message = _first("message", own_stage, base_stage)
        stages[stage] = StagePolicy(
            classifiers=_first("classifiers", own_stage, base_stage) or (),
            rules=MappingProxyType({**(base_stage.rules if base_stage else {}), **(own_stage.rules if own_stage else {})}),
            fail=fail,
            timeout_s=DEFAULT_TIMEOUT_MS / 1000 if timeout_s is None else timeout_s,
            message=DEFAULT_MESSAGES[stage] if message is None else message,
        )
    return SafetyPolicy(
        policy_id=policy_id, version=version, stages=MappingProxyType(stages), classifier_settings=MappingProxyType(dict(settings))
    )


def _first(attribute: str, *tables: _StageTable | None):
    """The value the nearest table sets for `attribute` (None: none of them does)."""
    return next((value for table in tables if table is not None and (value := getattr(table, attribute)) is not None), None)


def _table(document: Mapping[str, object], path: Path) -> Mapping[str, object]:
    value = document.get(path[-1], {})
    return _mapping(value, path)


def _mapping(value: object, path: Path) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise _Invalid(path, f"must be a table, got {_toml_value(value)}")
    return value


def _only(table: Mapping[str, object], keys: tuple[str, ...], path: Path) -> None:
    for key in table:
        if key not in keys:
            raise _Invalid((*path, key), f"unknown key; keys are {', '.join(keys)}")


def _fail(value: object, path: Path) -> FailMode:
    if value not in FAIL_MODES:
        raise _Invalid(
            path,
            f'must be "open" (decide without the failed classifier) or "closed" (the stage\'s strictest action), '
            f"got {_toml_value(value)}",
        )
    return value  # type: ignore[return-value]


def _timeout_s(value: object, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise _Invalid(path, f"must be a number of milliseconds > 0, got {_toml_value(value)}")
    return float(value) / 1000


def _choices(actions: tuple[str, ...]) -> str:
    return ", ".join(actions[:-1]) + f" or {actions[-1]}"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list" if value else "[]"
    return repr(value)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _dotted(path: Path) -> str:
    return ".".join(key if _BARE_KEY.fullmatch(key) else f'"{key}"' for key in path)


# --- where in the text a key is ---------------------------------------------------------------------

_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED_KEY = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER = re.compile(rf"\s*\[\[?\s*({_DOTTED_KEY})\s*\]\]?\s*(?:#.*)?$")
_ASSIGNMENT = re.compile(rf"\s*({_DOTTED_KEY})\s*=\s*(.*)$")
_INLINE_KEY = re.compile(rf"(?:^|[{{,])\s*({_DOTTED_KEY})\s*=")


def _key_parts(dotted: str) -> Path:
    parts = re.findall(_KEY_PART, dotted)
    return tuple(part[1:-1] if part[:1] in "\"'" else part for part in parts)


def _key_lines(text: str) -> dict[Path, int]:
    """Every table header and key the text sets, as its full path, with the 1-based line it is on.

    tomllib gives no positions back, so this is a light scan of the lines: headers set the current table,
    `key = value` lines set keys under it, and an inline table's keys are on its line. Lines inside a
    multi-line string are skipped.
    """
    lines: dict[Path, int] = {}
    table: Path = ()
    in_string: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string is not None:
            if line.count(in_string) % 2:
                in_string = None
            continue
        if header := _HEADER.match(line):
            table = _key_parts(header.group(1))
            lines.setdefault(table, number)
            continue
        if assignment := _ASSIGNMENT.match(line):
            keys = _key_parts(assignment.group(1))
            for length in range(1, len(keys) + 1):  # `harassment.threshold = 0.2` sets `harassment` here too
                lines.setdefault((*table, *keys[:length]), number)
            path = (*table, *keys)
            value = assignment.group(2)
            if value.startswith("{"):
                for inline in _INLINE_KEY.finditer(value):
                    lines.setdefault((*path, *_key_parts(inline.group(1))), number)
            for quotes in ('"""', "'''"):
                if value.count(quotes) % 2:
                    in_string = quotes
    return lines


def _line_of(text: str, path: Path) -> int | None:
    """The line of `path`, or of the nearest enclosing key or table the text sets (None: the file as a whole)."""
    lines = _key_lines(text)
    for length in range(len(path), 0, -1):
        if path[:length] in lines:
            return lines[path[:length]]
    return None
