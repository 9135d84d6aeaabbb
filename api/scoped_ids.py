"""Ids that carry a keyed tag of their owner's scope, so a lookup can tell at once whether an id could be the caller's.

A run id is `run_<ULID>_<tag>`, the tag an HMAC of the ULID and the owner's org and user under the server's secret;
a file id is `file_<ULID>_<tag>` with the org and the workspace it was uploaded to (a workspace's members share its
files); a conversation id `conv_<ULID>_<tag>` with the org, the owner and the workspace, so any API instance can
send a turn in the right workspace without looking the conversation up (the decider checks it exists and is theirs).
Without the secret nobody can make a tag, so an id not tagged for the caller is answered 404 at once, on the
same path whether it exists elsewhere or nowhere: neither the answer nor its timing tells another tenant's ids from
unknown ones. Only an id tagged for the caller is looked for patiently (a run another instance created a moment ago
may take a moment to reach this one's readers). Ids from before tags existed are looked up once, without waiting.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from enum import Enum


from kernel.envelope import new_id
from kernel.ids import minted_at

__all__ = ["minted_at"]  # re-exported: when an id was made is kernel's (it bounds log scans too)

_CONTEXT = b"turnlog id tag v1\0"
_TAG_CHARS = 8  # 40 bits of base32: a guessed tag is right once in about 10^12 tries
_TAGGED = re.compile(r"^(?P<prefix>[a-z]+)_(?P<ulid>[0-9A-HJKMNP-TV-Z]{26})_(?P<tag>[a-z2-7]{8})$")
_LEGACY = re.compile(r"^[a-z]+_[0-9A-HJKMNP-TV-Z]{26}$")


class Ownership(Enum):
    """What an id's form says about whether it could be the caller's."""

    CALLERS = "callers"  # tagged for the caller: look for it patiently
    LEGACY = "legacy"  # from before tags: look once
    NOT_CALLERS = "not_callers"  # tagged for someone else, or not an id turnlog makes: 404 at once


def _tag(secret: bytes, prefix: str, ulid: str, scope: tuple[str, ...]) -> str:
    message = _CONTEXT + "\0".join((prefix, ulid, *scope)).encode("utf-8")
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.b32encode(digest[:5]).decode("ascii").lower()[:_TAG_CHARS]


def new_scoped_id(secret: bytes, prefix: str, scope: tuple[str, ...]) -> str:
    """A new id for a resource of `scope` (a run: org and user; a file: org and workspace)."""
    plain = new_id(prefix)
    ulid = plain.partition("_")[2]
    return f"{plain}_{_tag(secret, prefix, ulid, scope)}"


def matching_scope(
    secret: bytes, resource_id: str, *, prefix: str, scopes: Iterable[tuple[str, ...]]
) -> tuple[str, ...] | None:
    """Which of `scopes` a tagged id was made for (a conversation: in which of the caller's workspaces), if any."""
    tagged = _TAGGED.match(resource_id)
    if tagged is None or tagged["prefix"] != prefix:
        return None
    for scope in scopes:
        if hmac.compare_digest(_tag(secret, prefix, tagged["ulid"], scope), tagged["tag"]):
            return tuple(scope)
    return None


def ownership(secret: bytes, resource_id: str, *, prefix: str, scopes: Iterable[tuple[str, ...]]) -> Ownership:
    """Whether `resource_id` could belong to one of the caller's `scopes` (several: a file in any of their workspaces)."""
    tagged = _TAGGED.match(resource_id)
    if tagged is None:
        return Ownership.LEGACY if _LEGACY.match(resource_id) and resource_id.startswith(f"{prefix}_") else Ownership.NOT_CALLERS
    if tagged["prefix"] != prefix:
        return Ownership.NOT_CALLERS
    for scope in scopes:
        if hmac.compare_digest(_tag(secret, prefix, tagged["ulid"], scope), tagged["tag"]):
            return Ownership.CALLERS
    return Ownership.NOT_CALLERS


def run_scope(org_id: str, user_id: str) -> tuple[str, ...]:
    return (org_id, user_id)


def conversation_scope(org_id: str, user_id: str, workspace_id: str) -> tuple[str, ...]:
    return (org_id, user_id, workspace_id)


def file_scope(org_id: str, workspace_id: str) -> tuple[str, ...]:
    return (org_id, workspace_id)
