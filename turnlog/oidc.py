"""`turnlog serve`'s single sign-on settings: an OIDC provider whose tokens are accepted beside turnlog's own.

They come from an OIDC file (TOML, see `oidc.example.toml`; `--oidc-config`) and from `--oidc-*` options, which win
over the file's keys; with neither, only turnlog's own tokens are accepted (docs/deploy.md, "Single sign-on (OIDC)").
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from api.oidc import OidcConfig
from kernel.config_files import ConfigFileError, read_toml
from turnlog.options import CommandParser, number_option

# The options, by the OidcConfig field each sets (the file's key of the same name).
_OPTION_FIELDS = {
    "oidc_issuer": "issuer",
    "oidc_audience": "audience",
    "oidc_jwks_url": "jwks_url",
    "oidc_user_claim": "user_claim",
    "oidc_org_claim": "org_claim",
    "oidc_org": "org",
    "oidc_workspaces_claim": "workspaces_claim",
    "oidc_default_workspace": "default_workspaces",
    "oidc_role_claim": "role_claim",
    "oidc_admin_value": "admin_values",
    "oidc_jwks_cooldown_s": "jwks_cooldown_s",
}
_FIELDS = {field.name: field for field in dataclasses.fields(OidcConfig)}


class OidcFileError(ConfigFileError):
    """An OIDC file that cannot be used: `source`, `line` (1-based, when known), `field`, `problem`."""


def add_oidc_options(parser: CommandParser) -> None:
    parser.add_option(
        "--oidc-config", type=Path, metavar="FILE",
        help="an OIDC file (TOML, see oidc.example.toml): a provider whose bearer tokens are accepted too, and how their"
        " claims map to users, orgs, workspaces and roles; the --oidc-* options win over its keys",
    )
    parser.add_option(
        "--oidc-issuer", metavar="URL", shown_default="none, turnlog's own tokens only",
        help="accept bearer tokens this OIDC provider issues (their iss, exactly), beside turnlog's own",
    )
    parser.add_option("--oidc-audience", metavar="AUDIENCE", help="what the provider's tokens carry in aud for this server")
    parser.add_option(
        "--oidc-jwks-url", metavar="URL", shown_default="jwks_uri of <issuer>/.well-known/openid-configuration",
        help="where the provider publishes its signing keys",
    )
    parser.add_option("--oidc-user-claim", metavar="CLAIM", shown_default="sub", help="the claim naming the user")
    parser.add_option("--oidc-org-claim", metavar="CLAIM", help="the claim naming the user's org")
    parser.add_option("--oidc-org", metavar="ORG_ID", help="one org for every user (single tenant), instead of --oidc-org-claim")
    parser.add_option("--oidc-workspaces-claim", metavar="CLAIM", help="the claim listing the user's workspace ids")
    parser.add_option(
        "--oidc-default-workspace", repeated=True, metavar="WORKSPACE_ID",
        help="a workspace of every user whose token lacks the workspaces claim; repeat for several",
    )
    parser.add_option(
        "--oidc-role-claim", metavar="CLAIM",
        help="a claim (a string or a list of strings) that makes the user an org administrator when it holds an"
        " --oidc-admin-value; without it every user is a member",
    )
    parser.add_option(
        "--oidc-admin-value", repeated=True, metavar="VALUE", help="a value of --oidc-role-claim meaning admin; repeat for several"
    )
    parser.add_option(
        "--oidc-jwks-cooldown-s", type=number_option(at_least=0), metavar="SECONDS", shown_default="30",
        help="the provider's keys are fetched at most once per this long, however many unknown key ids tokens name",
    )


def oidc_config(arguments: argparse.Namespace) -> OidcConfig | None:
    """The OIDC settings of the file and the options (options win); None when neither names any. A ValueError says
    what is wrong."""
    values = read_oidc_file(arguments.oidc_config) if arguments.oidc_config is not None else {}
    for dest, name in _OPTION_FIELDS.items():
        value = getattr(arguments, dest)
        if value is not None:
            values[name] = tuple(value) if isinstance(value, list) else value
    if not values:
        return None
    if "issuer" not in values:
        raise ValueError("OIDC settings without an issuer: give --oidc-issuer, or issuer in the OIDC file (--oidc-config)")
    if "audience" not in values:
        raise ValueError("OIDC: audience (--oidc-audience) is required: the aud the provider's tokens carry for this server")
    return OidcConfig(**values)


def read_oidc_file(path: Path) -> dict[str, object]:
    try:
        text = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read the OIDC file {str(path)!r}: {error.strerror}") from None
    return parse_oidc_file(text, source=str(path))


def parse_oidc_file(text: str | bytes, *, source: str = "oidc.toml") -> dict[str, object]:
    """The file's keys as OidcConfig fields, checked for their types (not yet for each other: `OidcConfig` does that)."""
    text, document = read_toml(text, source=source, error=OidcFileError)
    values: dict[str, object] = {}
    for key, value in document.items():
        field = _FIELDS.get(key)
        if field is None:
            raise OidcFileError(
                source=source, line=_line_of(text, key), field=key, problem=f"unknown key; keys are {', '.join(_FIELDS)}"
            )
        try:
            values[key] = _typed(value, str(field.type))
        except ValueError as error:
            raise OidcFileError(source=source, line=_line_of(text, key), field=key, problem=str(error)) from None
    return values


def _typed(value: object, annotation: str) -> object:
    if annotation.startswith("tuple"):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"must be a list of strings, got {value!r}")
        return tuple(value)
    if annotation == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number of seconds, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value


def _line_of(text: str, key: str) -> int | None:
    pattern = re.compile(rf"\s*\"?{re.escape(key)}\"?\s*=")
    return next((number for number, line in enumerate(text.splitlines(), start=1) if pattern.match(line)), None)
