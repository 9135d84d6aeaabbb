"""Data keys wrapped by an AWS KMS key (envelope encryption): the `KeyStore` port for production.

`--keys kms:<key id, alias or ARN>[?region=...&endpoint=http://host:port&dir=/path]`. Each data key is made by
the KMS (`GenerateDataKey`, AES-256) and its key file (`events.key_files` layout, under `dir`, default
`<data dir>/keys`) holds only the KMS's ciphertext of it. A process unwraps a key through the KMS (`Decrypt`)
on its first use, then answers from memory. Every call names the subject as its encryption context, so a
wrapped key copied to another subject's file does not open. Erasure deletes the wrapped key file after the
erased marker, as with plain key files: the KMS can unwrap only what still exists.

What this adds over plain key files: the directory (and any backup of it) opens nothing without the KMS, which
is where access is granted, logged and revoked. A backup of the wrapped keys taken before an erasure still
opens the erased data for whoever may call the KMS: keep the directory out of the log's backups all the same.

Credentials come from the standard AWS chain (environment, shared config files, instance roles), never from
the URL. Tested against `moto_server`'s KMS (`tests/events/test_key_store_contract.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from events.aws_urls import url_options
from events.key_files import KeyFileStore
from kernel.errors import Unavailable
from kernel.sealing import DATA_KEY_BYTES, Subject

__all__ = ["KmsKeyWrapping", "KmsLocation", "KeyStoreUnavailable", "kms_key_store", "parse_kms_url"]

_URL_OPTIONS = frozenset({"region", "endpoint", "dir"})
# Errors that say the stored ciphertext is not one this key and context open: damage, not an outage.
_NOT_OURS = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})


class KeyStoreUnavailable(Unavailable):
    """The KMS cannot be reached, or refused the call for a reason a retry or an operator may fix."""


@dataclass(frozen=True, kw_only=True)
class KmsLocation:
    """Which KMS key wraps the data keys, where the KMS is, and where the wrapped keys live."""

    key_id: str
    directory: Path
    region: str | None = None
    endpoint_url: str | None = None


def parse_kms_url(url: str, *, default_directory: Path) -> KmsLocation:
    """`kms:<key id | alias/name | ARN>[?region=...&endpoint=http(s)://host:port&dir=/path]`; unknown options refused."""
    parts = urlsplit(url)
    if parts.scheme != "kms":
        raise ValueError(f"a KMS key store URL starts with kms:, got {url!r}")
    key_id = unquote(parts.netloc + parts.path).strip("/")
    if not key_id:
        raise ValueError(f"a KMS key store URL names the KMS key: kms:alias/turnlog or kms:<key id or ARN>, got {url!r}")
    options = url_options(url, allowed=_URL_OPTIONS, what="KMS")
    return KmsLocation(
        key_id=key_id,
        directory=Path(options["dir"]) if options.get("dir") else default_directory,
        region=options.get("region") or None,
        endpoint_url=options.get("endpoint") or None,
    )


class KmsKeyWrapping:
    """`KeyWrapping` through AWS KMS: keys made by `GenerateDataKey`, opened by `Decrypt`, bound to their subject."""

    def __init__(self, location: KmsLocation, *, max_attempts: int = 3, connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 10.0) -> None:
        self._location = location
        config = Config(
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
        )
        # A client is thread-safe, and the codec asks for keys from the event loop and from worker threads.
        self._client: Any = boto3.session.Session().client(
            "kms", endpoint_url=location.endpoint_url, region_name=location.region, config=config
        )

    def new_key(self, subject: Subject) -> tuple[bytes, bytes]:
        made = self._call(
            "make a data key", subject, self._client.generate_data_key,
            KeyId=self._location.key_id, KeySpec="AES_256", EncryptionContext=_context(subject),
        )
        return made["Plaintext"], made["CiphertextBlob"]

    def unwrap(self, subject: Subject, stored: bytes, *, path: Path) -> bytes:
        try:
            opened = self._call(
                "unwrap a data key", subject, self._client.decrypt,
                CiphertextBlob=stored, KeyId=self._location.key_id, EncryptionContext=_context(subject),
            )
        except _NotOurs:
            raise ValueError(
                f"the key file {path} does not open under KMS key {self._location.key_id!r} for {subject.key_id}:"
                " it is damaged, another subject's, or not wrapped by this KMS key"
            ) from None
        key = opened["Plaintext"]
        if len(key) != DATA_KEY_BYTES:
            raise ValueError(f"the key file {path} unwraps to {len(key)} bytes, not a {DATA_KEY_BYTES}-byte key")
        return key

    def _call(self, what: str, subject: Subject, function: Any, /, **arguments: Any) -> Any:
        try:
            return function(**arguments)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _NOT_OURS:
                raise _NotOurs() from None
            raise KeyStoreUnavailable(
                detail=f"the KMS refused to {what} for {subject.key_id} ({code}): check the key"
                f" {self._location.key_id!r} and this process's permission to use it",
                retry_after_s=5,
            ) from error
        except BotoCoreError as error:
            raise KeyStoreUnavailable(detail=f"the KMS cannot be reached to {what}: {error}", retry_after_s=5) from error


class _NotOurs(Exception):
    """The KMS says the stored ciphertext is not one this key and context open."""


def kms_key_store(location: KmsLocation) -> KeyFileStore:
    """Key files under `location.directory` holding data keys wrapped by `location.key_id`."""
    return KeyFileStore(root=location.directory, wrapping=KmsKeyWrapping(location))


def _context(subject: Subject) -> dict[str, str]:
    return {"turnlog-subject": subject.key_id}
