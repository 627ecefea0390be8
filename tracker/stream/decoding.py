"""Decoding: the bytes of an input record into the event the pure core correlates.

The core never sees bytes or a JSON library: this module decodes a record's value (bounded
in size and depth), hands the body to ``tracker.core.correlation.correlate``, and turns the
shared decisions topic's records into decision events. Ingest and replay both read their
input through ``to_event``, so a live run and a replay see the same events.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from tracker.core.correlation import Record, correlate
from tracker.core.definitions import Catalog
from tracker.core.errors import CorrelationError, StateError
from tracker.core.events import Event, decision_event

GENERATION_HEADER = "saga_tracker_generation"  # on every output: which generation sent it
MAX_DEPTH = 64
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)  # a JSON string, escapes included
_BRACKET = re.compile(rb"[\[\]{}]")


def _depth_ok(obj: Any, limit: int) -> bool:
    stack = [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def nesting(value: bytes) -> int:
    """How deep the brackets of a JSON text nest, outside its strings."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub(b'""', value)):
        depth += 1 if bracket in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _not_json(value: bytes, exc: orjson.JSONDecodeError) -> CorrelationError:
    """Why a value is not JSON: not UTF-8, nested too deep for the parser, or anything else."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as bad:
        return CorrelationError("bad_encoding", f"not UTF-8: byte {bad.start} ({bad.reason})")
    if value.count(b"{") + value.count(b"[") > MAX_DEPTH and nesting(value) > MAX_DEPTH:
        return CorrelationError("too_deep", f"JSON nested deeper than {MAX_DEPTH} levels")
    return CorrelationError("not_json", str(exc)[:200])


def decode(record: Record, max_bytes: int) -> dict[str, Any]:
    """The record's value as a JSON object; raises ``CorrelationError`` with the reason."""
    value = record.value
    if value is None:
        raise CorrelationError("empty", "the record has no value (tombstone)")
    if not value:
        raise CorrelationError("empty", "the record's value is empty (0 bytes)")
    if len(value) > max_bytes:
        raise CorrelationError("oversized", f"{len(value)} bytes, the limit is {max_bytes}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _not_json(value, exc) from None
    if not isinstance(obj, dict):
        raise CorrelationError("not_object", f"the JSON value is a {type(obj).__name__}, not an object")
    # Nesting needs a bracket per level: few brackets in all (the common case), no walk.
    if value.count(b"{") + value.count(b"[") > MAX_DEPTH and not _depth_ok(obj, MAX_DEPTH):
        raise CorrelationError("too_deep", f"JSON nested deeper than {MAX_DEPTH} levels")
    return obj


def read_event(catalog: Catalog, record: Record, *, max_bytes: int) -> Event:
    """Decode a service record and correlate it; raises ``CorrelationError`` or ``Ignored``."""
    return correlate(catalog, record, decode(record, max_bytes))


def to_event(catalog: Catalog, record: Record, *, decisions: str, generation: int, max_bytes: int) -> Event | None:
    """The saga-log record for an input record; None for a generation's own decisions.

    Raises ``Ignored`` (an event type the definitions ignore) or ``CorrelationError``.
    """
    if record.topic != decisions:
        return read_event(catalog, record, max_bytes=max_bytes)
    if decided_by(record) == generation:
        return None  # this generation took it: already in its state
    try:
        return decision_event(orjson.loads(record.value or b"null"))
    except (StateError, orjson.JSONDecodeError) as exc:
        raise CorrelationError("bad_decision", str(exc)) from None


def decided_by(record: Record) -> int | None:
    for k, v in record.headers:
        if k == GENERATION_HEADER:
            try:
                return int(v)
            except ValueError:
                return None
    return None
