"""Avro codec: dataclasses <-> Avro single-object encoding (magic C3 01 + CRC-64-AVRO fingerprint + body).

Every message names its writer schema by fingerprint, so no schema registry service is needed.
Older writer schemas are kept in `schemas/history/`: their bytes are resolved against the current
reader schema, which is how a compatible schema change keeps old log entries readable.
"""

import dataclasses
import functools
import io
import json
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, load_schema, parse_schema, to_parsing_canonical_form

import schemas
from kernel.envelope import Envelope
from kernel.envelope import Actor
from kernel.recent_decodes import RecentDecodes
from kernel.sealed_payloads import SEALED_PAYLOAD, PayloadSealing
from kernel.sealing import Erased, SealBroken, Subject

MAGIC = b"\xc3\x01"


class UndecodableMessage(ValueError):
    """Bytes that are not a message this codec knows (poison messages go to the dead-letter topic)."""


def fingerprint_of(parsed_schema: dict) -> bytes:
    """The CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form, little-endian as the spec says."""
    hex_digest = fingerprint(to_parsing_canonical_form(parsed_schema), "CRC-64-AVRO")
    return int(hex_digest, 16).to_bytes(8, "little")


@dataclasses.dataclass(frozen=True, kw_only=True)
class _WriterSchema:
    name: str
    schema: dict


class AvroCodec:
    """Encodes envelopes and payloads of the given dataclass types with the schemas of the same name."""

    def __init__(
        self,
        *,
        payload_types: Iterable[type],
        schema_directory: Path = schemas.DIRECTORY,
        sealing: PayloadSealing | None = None,
    ) -> None:
        self._types: dict[str, type] = {cls.__name__: cls for cls in payload_types}
        self._reader_schemas: dict[str, dict] = {}
        self._writers: dict[bytes, _WriterSchema] = {}
        self._fingerprints: dict[str, bytes] = {}
        # With sealing, the declared content types' payloads are sealed on encode (docs/encryption.md); without,
        # nothing is sealed and a sealed payload on the log is undecodable here.
        self.sealing = sealing
        self._recent = RecentDecodes()  # the consumers of one process share what each decodes
        for name in [*self._types, "Envelope", SEALED_PAYLOAD]:
            schema = load_schema(str(schema_directory / f"{name}.avsc"))
            self._reader_schemas[name] = schema
            self._fingerprints[name] = fingerprint_of(schema)
            self._writers[self._fingerprints[name]] = _WriterSchema(name=name, schema=schema)
        for history_file in sorted((schema_directory / "history").glob("*.avsc")):
            # History files are frozen, fully expanded writer schemas: `<Name>.v<N>.avsc`.
            schema = parse_schema(json.loads(history_file.read_text()))
            name = history_file.name.split(".")[0]
            if name in self._reader_schemas:
                self._writers.setdefault(fingerprint_of(schema), _WriterSchema(name=name, schema=schema))

    # -- payloads --------------------------------------------------------------------------

    def encode_payload(self, payload: object) -> bytes:
        name = type(payload).__name__
        if name not in self._types:
            raise TypeError(f"{name} has no Avro schema registered with this codec")
        return self._encode(name, _to_avro(payload))

    def decode_payload(self, data: bytes) -> object:
        name, record = self._decode(data)
        if name not in self._types:
            raise UndecodableMessage(f"{name} is not a payload type")
        return _from_avro(self._types[name], record)

    # -- envelopes -------------------------------------------------------------------------

    def encode(self, envelope: Envelope) -> bytes:
        return self._encode(
            "Envelope",
            {
                "event_id": envelope.event_id,
                "type": envelope.type,
                "key": envelope.key,
                "occurred_at": envelope.occurred_at,
                "actor": dataclasses.asdict(envelope.actor),
                "causation_id": envelope.causation_id,
                "correlation_id": envelope.correlation_id,
                "trace_parent": envelope.trace_parent,
                "payload": self._sealed(envelope, self.encode_payload(envelope.payload)),
            },
        )

    def decode(self, data: bytes) -> Envelope:
        memorable = type(data) is bytes  # hashable and immutable: what the logs hand out
        if memorable:
            recent = self._recent.get(data, key_exists=self._key_exists)
            if recent is not None:
                return recent
        name, record = self._decode(data)
        if name != "Envelope":
            raise UndecodableMessage(f"expected an Envelope, got {name}")
        payload, subject = self._opened(record)
        envelope = Envelope(
            event_id=record["event_id"],
            key=record["key"],
            occurred_at=record["occurred_at"],
            actor=Actor(**record["actor"]),
            payload=payload,
            causation_id=record["causation_id"],
            correlation_id=record["correlation_id"],
            trace_parent=record["trace_parent"],
        )
        if memorable and not isinstance(payload, Erased):
            self._recent.put(data, envelope, subject)
        return envelope

    def _key_exists(self, subject: Subject) -> bool:
        return self.sealing is not None and self.sealing.keys.existing_key(subject) is not None

    def envelope_type(self, data: bytes) -> str | None:
        """The payload type an envelope names, read from its header without decoding the rest or opening the payload.

        None when the bytes are not an envelope in the current schema (an older writer schema, junk): decode those.
        The type is the envelope's second field, after `event_id`: two length-prefixed Avro strings.
        """
        if data[:2] != MAGIC or data[2:10] != self._fingerprints["Envelope"]:
            return None
        event_id_length, position = _avro_length(data, 10)
        if event_id_length is None:
            return None
        type_length, position = _avro_length(data, position + event_id_length)
        if type_length is None or position + type_length > len(data):
            return None
        try:
            return bytes(data[position:position + type_length]).decode()
        except UnicodeDecodeError:
            return None

    def resealed(self, data: bytes) -> bytes | None:
        """The envelope with its content payload sealed, when it was written in plaintext (before sealing); else None.

        The payload's bytes are sealed as they are (in their own writer schema), so reading it back gives what was
        written; an erased subject's payload is sealed under a key no one keeps (`PayloadSealing.seal_record`).
        """
        if self.sealing is None:
            raise ValueError("resealing needs a codec built with the key store")
        name, record = self._decode(data)
        payload = record["payload"]
        if name != "Envelope" or not self.sealing.seals(record["type"]):
            return None
        if bytes(payload[2:10]) == self._fingerprints[SEALED_PAYLOAD]:
            return None  # sealed already
        sealed = self.sealing.seal_record(
            payload, type_name=record["type"], event_id=record["event_id"], actor=Actor(**record["actor"])
        )
        if sealed is None:
            return None  # the system's own event: no org, no key
        return self._encode("Envelope", {**record, "payload": self._encode(SEALED_PAYLOAD, sealed)})

    # -- sealed payloads (kernel/sealed_payloads.py) ----------------------------------------

    def _sealed(self, envelope: Envelope, payload: bytes) -> bytes:
        if self.sealing is None or not self.sealing.seals(envelope.type):
            return payload
        sealed = self.sealing.seal_record(payload, type_name=envelope.type, event_id=envelope.event_id, actor=envelope.actor)
        return payload if sealed is None else self._encode(SEALED_PAYLOAD, sealed)

    def _opened(self, record: dict) -> tuple[object, Subject | None]:
        """The envelope's payload, and the subject whose key sealed it (None for a plaintext payload)."""
        payload = record["payload"]
        if bytes(payload[2:10]) != self._fingerprints[SEALED_PAYLOAD]:
            return self.decode_payload(payload), None  # plaintext: not a content type, or written before sealing
        if self.sealing is None:
            raise UndecodableMessage(f"a sealed {record['type']} payload, and this codec holds no keys")
        _, sealed = self._decode(payload)
        try:
            opened, subject = self.sealing.open_record(
                sealed, type_name=record["type"], event_id=record["event_id"], actor=Actor(**record["actor"])
            )
        except SealBroken as error:
            raise UndecodableMessage(str(error)) from None
        if not isinstance(opened, bytes):
            return opened, None  # Erased: the subject's key is destroyed
        payload_type, body = self._decode(opened)
        if payload_type != record["type"] or payload_type not in self._types:
            raise UndecodableMessage(f"a sealed payload names {payload_type}, its envelope {record['type']}")
        return _from_avro(self._types[payload_type], body), subject

    # -- single-object encoding ------------------------------------------------------------

    def _encode(self, name: str, record: dict) -> bytes:
        buffer = io.BytesIO()
        buffer.write(MAGIC)
        buffer.write(self._fingerprints[name])
        fastavro.schemaless_writer(buffer, self._reader_schemas[name], record)
        return buffer.getvalue()

    def _decode(self, data: bytes) -> tuple[str, dict]:
        if len(data) < 10 or data[:2] != MAGIC:
            raise UndecodableMessage("not Avro single-object encoding (bad magic)")
        writer = self._writers.get(bytes(data[2:10]))
        if writer is None:
            raise UndecodableMessage(f"unknown schema fingerprint {bytes(data[2:10]).hex()}")
        try:
            record = fastavro.schemaless_reader(
                io.BytesIO(data[10:]), writer.schema, self._reader_schemas[writer.name]
            )
        except Exception as error:  # fastavro raises many types for truncated or corrupt bodies
            raise UndecodableMessage(f"corrupt {writer.name} body: {error}") from error
        return writer.name, record


def _avro_length(data: bytes, position: int) -> tuple[int | None, int]:
    """A non-negative Avro `long` (zig-zag varint) at `position`, and where what follows it starts; None if it is not one."""
    shift = result = 0
    while position < len(data) and shift < 64:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            length = (result >> 1) ^ -(result & 1)
            return (length, position) if length >= 0 else (None, position)
        shift += 7
    return None, position


def _to_avro(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_avro(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_avro(item) for item in value]
    return value


@functools.cache
def _field_hints(cls: type) -> tuple[tuple[str, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((field.name, hints[field.name]) for field in dataclasses.fields(cls))


def _from_avro(annotation: Any, value: Any) -> Any:
    """Rebuild a typed value from fastavro's dicts and lists, guided by the dataclass annotations."""
    if value is None:
        return None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        non_none = [arm for arm in typing.get_args(annotation) if arm is not type(None)]
        return _from_avro(non_none[0], value) if len(non_none) == 1 else value
    if origin in (tuple, list):
        item_type = typing.get_args(annotation)[0]
        items = [_from_avro(item_type, item) for item in value]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(annotation):
        return annotation(
            **{name: _from_avro(hint, value[name]) for name, hint in _field_hints(annotation) if name in value}
        )
    return value
