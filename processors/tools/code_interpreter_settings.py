"""`code_interpreter`'s settings, the tools file's `[code_interpreter]` table: the sandbox's limits, per org.

`[code_interpreter]` sets every caller's limits (the issue's defaults: 512 MiB, 10 s CPU, 30 s wall, 10 MiB
files); `[code_interpreter.orgs.<org>]` changes some of them for one org. Checked on construction; a bad
value raises `DeclarationError` naming its key, which the tools file's parser places on its line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from kernel.envelope import Actor
from processors.tools.catalog import DeclarationError
from processors.tools.sandbox import KIB, MIB, SandboxLimits

# The file's keys, in the units a person writes, and the `SandboxLimits` field each sets.
LIMIT_KEYS: Mapping[str, tuple[str, int]] = {
    "memory_mib": ("memory_bytes", MIB),
    "cpu_s": ("cpu_s", 1),
    "wall_s": ("wall_s", 1),
    "file_mib": ("file_bytes", MIB),
    "processes": ("processes", 1),
    "open_files": ("open_files", 1),
    "output_kib": ("output_bytes", KIB),
}


def limits_from(values: Mapping[str, object], base: SandboxLimits = SandboxLimits()) -> SandboxLimits:
    """`base` with the file's `values` (e.g. `{"memory_mib": 1024}`) applied."""
    changes: dict[str, object] = {}
    for key, value in values.items():
        name, unit = LIMIT_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise DeclarationError(field=key, problem=f"must be a number > 0, got {value!r}")
        if name != "wall_s" and value != int(value):
            raise DeclarationError(field=key, problem=f"must be a whole number, got {value!r}")
        changes[name] = float(value) if name == "wall_s" else int(value) * unit
    try:
        return replace(base, **changes)
    except ValueError as error:  # a value SandboxLimits refuses (e.g. too few processes): "<field>: <problem>"
        name, _, problem = str(error).partition(": ")
        key = next((key for key, (field_name, _) in LIMIT_KEYS.items() if field_name == name), next(iter(values), ""))
        raise DeclarationError(field=key, problem=problem or str(error)) from None


@dataclass(frozen=True, kw_only=True)
class CodeInterpreterSettings:
    limits: SandboxLimits = SandboxLimits()
    by_org: Mapping[str, SandboxLimits] = field(default_factory=lambda: MappingProxyType({}))

    def limits_for(self, actor: Actor) -> SandboxLimits:
        """The caller's org's limits, or everyone's."""
        return self.by_org.get(actor.org_id, self.limits)
