"""Correlation: turn a record from a service topic, its value decoded, into a saga ``Event``.

Reads nothing but the record, its decoded body and the catalog (no I/O, no clock, no JSON
library: the shell decodes). Anything that cannot be
used raises ``CorrelationError`` with a dead-letter reason code; ``Ignored`` means the
definitions declare the event type irrelevant (counted, not dead-lettered).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tracker.core.definitions import Catalog, FieldRef, SagaDefinition
from tracker.core.errors import CorrelationError
from tracker.core.events import Event
from tracker.core.times import parse_time

TRACE_HEADERS = ("traceparent", "tracestate")
MAX_VALUE_CHARS = 512  # ids, types and business keys longer than this are not identifiers


class Ignored(Exception):
    """The event type is listed under ``ignore`` by its saga definition."""

    def __init__(self, saga_type: str, event_type: str) -> None:
        super().__init__(event_type)
        self.saga_type, self.event_type = saga_type, event_type


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp: float | None  # epoch seconds

    @classmethod
    def read(
        cls,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        timestamp: float | None,
    ) -> Record:
        """``Record(...)`` without the frozen dataclass's ``__setattr__`` per field (~1.5 µs), once
        per record the worker reads."""
        new = object.__new__(cls)
        new.__dict__.update(
            topic=topic, partition=partition, offset=offset, key=key, value=value, headers=headers, timestamp=timestamp
        )
        return new

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


def _header(record: Record, name: str) -> str | None:
    for k, v in reversed(record.headers):  # the last of repeated headers wins
        if k == name:
            if v is None:
                return None
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                raise CorrelationError("bad_header", f"header {name!r} is not UTF-8") from None
    return None


def _lookup(ref: FieldRef, record: Record, body: Mapping[str, Any]) -> Any:
    if ref.source == "field":
        node: Any = body
        for part in ref.path:
            if not isinstance(node, dict):  # decoded JSON: objects are dicts
                return None
            node = node.get(part)
            if node is None:  # absent, or null: neither identifies anything
                return None
        return node
    if ref.source == "header":
        return _header(record, ref.path[0])
    if ref.source == "key":
        if record.key is None:
            return None
        try:
            return record.key.decode("utf-8")
        except UnicodeDecodeError:
            raise CorrelationError("bad_key", "the record key is not UTF-8") from None
    return record.timestamp  # "timestamp"


def _identifier(value: Any) -> str | None:
    """Strings and integers identify things; anything else does not."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value:
        return value
    return None


Reader = Callable[[Record, Mapping[str, Any]], Any]
# Each list of references compiled once (its first present value), by the list's identity: a
# definition's lists live as long as its catalog, and the entry keeps its list, so an id is
# never reused while its entry is here.
_READERS: dict[int, tuple[Sequence[FieldRef], Reader]] = {}


def _getter(ref: FieldRef) -> Reader:
    """``_lookup`` for one reference, its kind decided once: a body field one or two levels deep
    (``type``, ``id``, ``data.order_id``: most references) is one or two dict lookups; any other
    goes through ``_lookup``."""
    if ref.source == "field" and len(ref.path) == 1:
        name = ref.path[0]
        return lambda record, body: body.get(name) if isinstance(body, dict) else None
    if ref.source == "field" and len(ref.path) == 2:
        outer, inner = ref.path

        def nested(record: Record, body: Mapping[str, Any]) -> Any:
            node = body.get(outer) if isinstance(body, dict) else None
            return node.get(inner) if isinstance(node, dict) else None

        return nested
    return lambda record, body: _lookup(ref, record, body)


def _compile(refs: Sequence[FieldRef]) -> Reader:
    """The first present value of ``refs``."""
    getters = tuple(_getter(ref) for ref in refs)
    if len(getters) == 1:
        return getters[0]

    def first(record: Record, body: Mapping[str, Any]) -> Any:
        for get in getters:
            value = get(record, body)
            if value is not None:
                return value
        return None

    return first


def _first(refs: Sequence[FieldRef], record: Record, body: Mapping[str, Any]) -> Any:
    found = _READERS.get(id(refs))
    if found is None or found[0] is not refs:
        found = _READERS[id(refs)] = (refs, _compile(refs))
    return found[1](record, body)


def _text(what: str, value: Any, reason: str) -> str:
    text = _identifier(value)
    if text is None:
        raise CorrelationError(reason, f"no usable {what} (found {type(value).__name__})")
    if len(text) > MAX_VALUE_CHARS:
        raise CorrelationError(f"{what.replace(' ', '_')}_too_long", f"{len(text)} characters, the limit is {MAX_VALUE_CHARS}")
    return text


def correlate(catalog: Catalog, record: Record, body: Mapping[str, Any]) -> Event:
    """Map one record, its value already decoded into ``body`` (the shell decodes JSON: see
    ``tracker.stream.decoding``), to the saga event it is; raise CorrelationError or Ignored."""
    candidates = catalog.readers.get(record.topic, ())
    if not candidates:
        raise CorrelationError("unknown_topic", f"no saga definition reads topic {record.topic!r}")
    event_type: str | None = None
    definition: SagaDefinition | None = None
    for d in candidates:
        found = _identifier(_first(d.correlation.event_type, record, body))
        if found is None:
            continue
        event_type = event_type or found
        if (record.topic, found) in catalog.by_topic_type:
            event_type, definition = found, catalog.by_topic_type[(record.topic, found)]
            break
    if event_type is None:
        raise CorrelationError("no_event_type", "no event type in the record (field 'type' or header 'ce_type')")
    if definition is None:
        ignoring = catalog.ignored.get((record.topic, event_type))
        if ignoring is not None:
            raise Ignored(ignoring, event_type)
        shown = event_type if len(event_type) <= 100 else event_type[:100] + "..."
        raise CorrelationError(
            "unknown_event_type", f"event type {shown!r} on topic {record.topic!r} belongs to no saga", event_type
        )
    return _plan(definition, event_type)(record, body)


Plan = Callable[[Record, Mapping[str, Any]], Event]
# What one event type of one definition reads, compiled on first use (as ``_READERS``: by the
# definition's identity, the entry keeping its definition).
_PLANS: dict[tuple[int, str], tuple[SagaDefinition, Plan]] = {}


def _plan(definition: SagaDefinition, event_type: str) -> Plan:
    found = _PLANS.get((id(definition), event_type))
    if found is None or found[0] is not definition:
        found = _PLANS[(id(definition), event_type)] = (definition, _compile_plan(definition, event_type))
    return found[1]


def _compile_plan(definition: SagaDefinition, event_type: str) -> Plan:
    """The event an input record of ``event_type`` is, its readers decided once: the saga id,
    event id and time, and the business keys."""
    corr = definition.correlation
    saga_id_of, event_id_of, time_of = _compile(corr.saga_id_refs(event_type)), _compile(corr.event_id), _compile(corr.event_time)
    keys_of = tuple((name, _compile(refs)) for name, refs in definition.business_keys.items())
    saga_type = definition.name

    def event(record: Record, body: Mapping[str, Any]) -> Event:
        saga_id = _text("saga id", saga_id_of(record, body), "no_saga_id")
        raw_id = event_id_of(record, body)
        source = record.source
        # Without an id, the record's position identifies it: redelivery still deduplicates.
        event_id = source if raw_id is None else _text("event id", raw_id, "bad_event_id")
        raw_time = time_of(record, body)
        time = parse_time(raw_time) if raw_time is not None else None
        if time is None:
            if raw_time is not None and raw_time != record.timestamp:
                raise CorrelationError("bad_event_time", f"cannot read event time {str(raw_time)[:60]!r}")
            if record.timestamp is None:
                raise CorrelationError("bad_event_time", "no event time and no record timestamp")
            time = record.timestamp
        keys: dict[str, str] = {}
        for name, read in keys_of:
            value = _identifier(read(record, body))
            if value is not None and len(value) <= MAX_VALUE_CHARS:
                keys[name] = value
        trace: dict[str, str] = {}
        if record.headers:
            for name in TRACE_HEADERS:
                value = _header(record, name)
                if value is not None and len(value) <= MAX_VALUE_CHARS:
                    trace[name] = value
        correlation_id = _identifier(body.get("correlation_id")) or _identifier(body.get("correlationid"))
        if correlation_id is not None and len(correlation_id) <= MAX_VALUE_CHARS:
            trace["correlation_id"] = correlation_id
        return Event.service(saga_id, saga_type, event_id, event_type, time, keys, trace, source)

    return event
