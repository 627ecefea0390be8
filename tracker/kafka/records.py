"""Client records (faust's messages, aiokafka's consumer records) as the core's ``Record``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.structs import ConsumerRecord
from faust.types import Message

from tracker.core.correlation import Record


def _headers(raw: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None) -> list[tuple[str, bytes]]:
    # faust gives a dict or a list of pairs, aiokafka a tuple of pairs. A header without a
    # value carries nothing to read: it is left out, as if absent (ingest and replay alike).
    pairs = raw.items() if isinstance(raw, Mapping) else (raw or [])
    return [(str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in pairs if v is not None]


def _record(topic: str, partition: int, offset: int, key: Any, value: Any, headers: Any, seconds: float | None) -> Record:
    return Record.read(
        topic, partition, offset, key, value, _headers(headers) if headers else [], seconds if seconds and seconds > 0 else None
    )


def from_message(m: Message) -> Record:
    """A faust message (its timestamp in seconds)."""
    return _record(m.topic, m.partition, m.offset, m.key, m.value, m.headers, m.timestamp)


def from_consumer_record(m: ConsumerRecord[Any, Any]) -> Record:
    """An aiokafka consumer record (its timestamp in milliseconds)."""
    seconds = m.timestamp / 1000 if m.timestamp else None
    return _record(m.topic, m.partition, m.offset, m.key, m.value, m.headers, seconds)
