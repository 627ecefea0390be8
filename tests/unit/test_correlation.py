"""Correlation: raw service records -> saga events, or a dead-letter reason."""

from __future__ import annotations

from dataclasses import fields
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from tracker.core.correlation import Ignored, Record, _first, _lookup
from tracker.core.definitions import FieldRef
from tracker.core.errors import CorrelationError
from tracker.core.events import Event
from tracker.core.times import parse_time
from tracker.loader import load_catalog
from tracker.stream.decoding import read_event

CATALOG = load_catalog()


def rec(
    value: object,
    topic: str = "payments",
    key: bytes | None = b"o-1",
    headers: list | None = None,
    timestamp: float | None = 1_700_000_000.0,
) -> Record:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return Record(topic, 2, 17, key, raw, headers or [], timestamp)


def test_cloudevent_json_maps_to_its_saga() -> None:
    e = read_event(
        CATALOG,
        rec(
            {
                "id": "e-1",
                "type": "PaymentAuthorized",
                "time": "2026-01-02T03:04:05.5Z",
                "data": {"order_id": "o-9", "customer_id": "c-1"},
                "correlation_id": "k-7",
            },
            headers=[("traceparent", b"00-t-s-01")],
        ),
        max_bytes=10_000,
    )
    assert (e.saga_id, e.saga_type, e.id, e.type) == ("o-9", "order_fulfilment", "e-1", "PaymentAuthorized")
    assert e.time == 1767323045.5 and e.keys == {"order_id": "o-9", "customer_id": "c-1"}
    assert e.trace == {"traceparent": "00-t-s-01", "correlation_id": "k-7"} and e.source == "payments/2/17"


def test_binary_cloudevent_headers_and_fallbacks() -> None:
    e = read_event(
        CATALOG,
        rec(
            {"data": {"order_id": 42}, "occurred_at": 1_700_000_001_000},
            headers=[("ce_type", b"PaymentDeclined"), ("ce_id", b"h-1")],
        ),
        max_bytes=10_000,
    )
    assert (e.saga_id, e.type, e.id, e.time) == ("42", "PaymentDeclined", "h-1", 1_700_000_001.0)
    no_id = read_event(CATALOG, rec({"type": "PaymentAuthorized", "data": {"order_id": "o"}}), max_bytes=10_000)
    assert no_id.id == "payments/2/17" and no_id.time == 1_700_000_000.0  # position and record timestamp


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (rec(b"\xff\xfe not json"), "bad_encoding"),
        (rec(b"{not json"), "not_json"),
        (rec([1, 2]), "not_object"),
        (rec(b"x" * 2000), "oversized"),
        (rec(b"[" * 100 + b"]" * 100), "not_object"),
        (rec(b'{"a":' * 70 + b"1" + b"}" * 70), "too_deep"),
        (rec({"data": {"order_id": "o"}}), "no_event_type"),
        (rec({"type": "PaymentTeleported", "data": {"order_id": "o"}}), "unknown_event_type"),
        (rec({"type": "PaymentAuthorized", "data": {}}), "no_saga_id"),
        (rec({"type": "PaymentAuthorized", "data": {"order_id": ["o"]}}), "no_saga_id"),
        (rec({"type": "PaymentAuthorized", "data": {"order_id": "o" * 600}}), "saga_id_too_long"),
        (rec({"type": "PaymentAuthorized", "time": "yesterday", "data": {"order_id": "o"}}), "bad_event_time"),
        (rec({"data": {"order_id": "o"}}, headers=[("ce_type", b"\xff")]), "bad_header"),
        (rec({"type": "OrderCreated", "data": {"order_id": "o"}}, topic="elsewhere"), "unknown_topic"),
        (rec(None, timestamp=None), "not_object"),
    ],
)
def test_unusable_records_have_a_reason(record: Record, reason: str) -> None:
    with pytest.raises(CorrelationError) as info:
        read_event(CATALOG, record, max_bytes=1000)
    assert info.value.reason == reason


def test_tombstone_is_dead_lettered() -> None:
    with pytest.raises(CorrelationError, match="empty"):
        read_event(CATALOG, Record("orders", 0, 0, b"k", None, [], None), max_bytes=100)


def test_ignored_event_types_are_not_dead_letters() -> None:
    with pytest.raises(Ignored):
        read_event(CATALOG, rec({"type": "OrderViewed", "data": {"order_id": "o"}}, topic="orders"), max_bytes=10_000)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01T00:00:00Z", 1767225600.0),
        ("2026-01-01T01:00:00+01:00", 1767225600.0),
        ("2026-01-01T00:00:00", 1767225600.0),
        (1767225600, 1767225600.0),
        (1767225600000, 1767225600.0),
        ("garbage", None),
        (True, None),
        (-5, None),
        ({}, None),
    ],
)
def test_event_times(value: object, expected: float | None) -> None:
    assert parse_time(value) == expected


JSONISH = hs.recursive(
    hs.none() | hs.booleans() | hs.integers() | hs.text(max_size=5),
    lambda inner: hs.dictionaries(hs.sampled_from(["a", "b", "id", "type"]), inner, max_size=4),
    max_leaves=8,
)
REFS = hs.lists(
    hs.sampled_from(["a", "b", "a.b", "b.a.id", "id", "type", "key", "timestamp", "header:ce_id"]).map(FieldRef.parse),
    min_size=1,
    max_size=4,
).map(tuple)


@given(refs=REFS, body=JSONISH, key=hs.none() | hs.just(b"k-1"), header=hs.none() | hs.just(b"h-1"))
@settings(max_examples=300, deadline=None)
def test_a_compiled_reference_list_finds_what_walking_its_references_finds(
    refs: tuple[FieldRef, ...], body: object, key: bytes | None, header: bytes | None
) -> None:
    record = Record("t", 0, 0, key, b"{}", [] if header is None else [("ce_id", header)], 1.5)
    walked = next((v for v in (_lookup(ref, record, body) for ref in refs) if v is not None), None)  # type: ignore[arg-type]
    assert _first(refs, record, body) == walked  # type: ignore[arg-type]


def test_a_correlated_event_is_the_dataclass_event_with_its_fields() -> None:
    """Correlation builds its event without the frozen dataclass's ``__init__``
    (``Event.service``): the same event, every field set, in the fields' order."""
    e = read_event(
        CATALOG,
        rec({"id": "e-1", "type": "PaymentAuthorized", "time": 5.0, "data": {"order_id": "o-9", "customer_id": "c-1"}}),
        max_bytes=1 << 20,
    )
    built = Event(
        saga_id="o-9",
        saga_type="order_fulfilment",
        id="e-1",
        type="PaymentAuthorized",
        time=5.0,
        keys={"order_id": "o-9", "customer_id": "c-1"},
        source="payments/2/17",
    )
    assert e == built and list(vars(e)) == [f.name for f in fields(Event)] == list(vars(built))
    assert e.action == {} and e.action is not Event.service("a", "b", "c", "d", 1.0, {}, {}, "").action


def test_a_record_read_is_the_dataclass_record_with_its_fields() -> None:
    """``Record.read`` (the feed's, once per record) builds the same record as ``Record(...)``."""
    from tracker.kafka.records import from_consumer_record

    consumer_record: Any = SimpleNamespace(
        topic="payments", partition=2, offset=17, key=b"o-9", value=b"{}", headers=(("h", b"v"),), timestamp=5000
    )
    read = from_consumer_record(consumer_record)
    built = Record(topic="payments", partition=2, offset=17, key=b"o-9", value=b"{}", headers=[("h", b"v")], timestamp=5.0)
    assert read == built and list(vars(read)) == [f.name for f in fields(Record)] == list(vars(built))
    assert read.source == "payments/2/17"
