"""Credential templates: header and environment values drawn from turnlog's environment or the caller, never the model.

A value is literal text with placeholders: `${env:NAME}` (turnlog's environment variable, read when the
value is rendered, so a rotated secret reaches the next session), `${user}`, `${org}` and `${workspace}`
(the caller's ids). Nothing else may appear inside `${...}`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from kernel.envelope import Actor
from processors.tools.catalog import DeclarationError

PlaceholderSource = Literal["env", "user", "org", "workspace"]

_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FORMS = "${env:NAME}, ${user}, ${org} or ${workspace}"


class MissingEnvironment(LookupError):
    """A template names an environment variable that is not set (the message names it, never a value)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the environment variable {name} is not set")
        self.name = name


@dataclass(frozen=True, kw_only=True)
class Placeholder:
    source: PlaceholderSource
    name: str = ""  # the variable, for `env`


@dataclass(frozen=True, kw_only=True)
class CredentialTemplate:
    """A parsed header or environment value: literal text and placeholders, in order."""

    text: str
    parts: tuple[str | Placeholder, ...]

    @classmethod
    def parse(cls, text: str) -> CredentialTemplate:
        """The template of `text`; `DeclarationError` (without a field) says which placeholder is not allowed."""
        parts: list[str | Placeholder] = []
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            if match.start() > position:
                parts.append(text[position : match.start()])
            parts.append(_placeholder(match.group(0), match.group(1).strip()))
            position = match.end()
        rest = text[position:]
        if "${" in rest:
            raise DeclarationError(field="", problem=f"{text!r} opens '${{' without closing it; placeholders are {_FORMS}")
        if rest:
            parts.append(rest)
        return cls(text=text, parts=tuple(parts))

    def render(self, *, actor: Actor, environ: Mapping[str, str]) -> str:
        """The value for this caller; `MissingEnvironment` when a variable it names is not set."""
        rendered: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                rendered.append(part)
            elif part.source == "env":
                value = environ.get(part.name)
                if value is None:
                    raise MissingEnvironment(part.name)
                rendered.append(value)
            else:
                rendered.append({"user": actor.user_id, "org": actor.org_id, "workspace": actor.workspace_id}[part.source])
        return "".join(rendered)

    @property
    def environment_names(self) -> tuple[str, ...]:
        return tuple(part.name for part in self.parts if isinstance(part, Placeholder) and part.source == "env")


def _placeholder(written: str, inside: str) -> Placeholder:
    if inside in ("user", "org", "workspace"):
        return Placeholder(source=inside)
    source, colon, name = inside.partition(":")
    if source.strip() == "env" and colon:
        name = name.strip()
        if _ENV_NAME.fullmatch(name):
            return Placeholder(source="env", name=name)
        raise DeclarationError(field="", problem=f"{written}: {name!r} is not an environment variable name")
    raise DeclarationError(field="", problem=f"{written} is not a placeholder turnlog fills; use {_FORMS}")


def render_all(templates: Mapping[str, CredentialTemplate], *, actor: Actor, environ: Mapping[str, str]) -> dict[str, str]:
    """Every value of a server's headers (or environment) for this caller."""
    return {key: template.render(actor=actor, environ=environ) for key, template in templates.items()}


def fingerprint(server: str, values: Mapping[str, str]) -> str:
    """A digest of a server's rendered credentials: sessions are pooled under it, so a session only ever
    serves callers whose credentials are identical, and no secret is kept as a key or shown in a repr."""
    digest = hashlib.sha256(server.encode())
    for key in sorted(values):
        for item in (key, values[key]):
            digest.update(b"\0" + item.encode())
    return digest.hexdigest()
