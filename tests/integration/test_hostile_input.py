"""Hostile input at the Kafka level: every kind of unusable record reaches the dead-letter topic
with its documented reason, fits the producer's limit, and no agent crashes (the short version
of the fault harness's ``hostile`` scenario)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from tests.integration.harness import Kafka, Scenario

pytestmark = pytest.mark.integration
LIMIT = 1_048_576  # SAGA_TRACKER_MAX_EVENT_BYTES (the default)


def produce_large(kafka: Kafka, records: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]]) -> None:
    """As a service's producer configured for large records would (Apache Kafka's limit raised)."""
    kafka.produce(records, max_request_size=16 << 20)


def padded(body: dict[str, Any], size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes."""
    raw = orjson.dumps({**body, "pad": ""})
    return orjson.dumps({**body, "pad": "x" * (size - len(raw))})


Case = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]], str]  # topic, key, value, headers, reason


def hostile(s: Scenario) -> dict[bytes, Case]:
    """key -> (topic, key, value, headers, expected reason)."""
    orders, log, decisions = s.topic("orders"), s.topic("saga-log"), s.app_id + "-decisions"
    unknown = {"id": "u", "type": "OrderTeleported", "data": {"order_id": "u"}}
    bad_time = {"type": "OrderCreated", "time": "not-a-time", "data": {"order_id": "t"}}
    cases: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]], str]] = [
        (orders, b"not-json", b"{not json", [], "not_json"),
        (orders, b"random", bytes(range(256)) * 4, [], "bad_encoding"),
        (orders, b"array", b"[1, 2, 3]", [], "not_object"),
        (orders, b"no-saga-id", orjson.dumps({"id": "n", "type": "OrderCreated", "data": {}}), [], "no_saga_id"),
        (orders, b"unknown-type", orjson.dumps(unknown), [], "unknown_event_type"),
        (
            orders,
            b"bad-time",
            orjson.dumps(bad_time),
            [],
            "bad_event_time",
        ),
        (orders, b"empty", b"", [], "empty"),
        (orders, b"tombstone", None, [], "empty"),
        (orders, b"deep", b"[" * 5000 + b"]" * 5000, [], "too_deep"),
        (orders, b"bad-utf8", b'{"type": "OrderCreated", "data": {"order_id": "\xff\xfe"}}', [], "bad_encoding"),
        (orders, b"at-limit", padded(unknown, LIMIT), [], "unknown_event_type"),
        (orders, b"under-limit", padded(unknown, LIMIT - 1), [], "unknown_event_type"),
        (orders, b"over-limit", padded(unknown, LIMIT + 1), [], "oversized"),
        (orders, b"far-over", b"y" * (10 << 20), [], "oversized"),
        (orders, b"bad-header", orjson.dumps({"data": {"order_id": "h"}}), [("ce_type", b"\xff\xfe")], "bad_header"),
        (log, b"not-ours", orjson.dumps({"hello": "world"}), [], "bad_record"),
        (log, b"not-json-log", b"\x00\x01", [], "bad_record"),
        (decisions, b"not-a-decision", orjson.dumps({"of": "nothing"}), [], "bad_decision"),
    ]
    out: dict[bytes, Case] = {key: (topic, key, value, headers, reason) for topic, key, value, headers, reason in cases}
    big_key = b"k" * (1 << 20)  # a 1 MB key on a record that cannot be used
    out[big_key] = (orders, big_key, b"{not json", [], "not_json")
    return out


def test_every_hostile_record_is_dead_lettered_with_its_reason_and_fits(scenario: Scenario) -> None:
    s = scenario
    w = s.worker().start()
    cases = hostile(s)
    produce_large(s.kafka, [(t, k, v, h) for t, k, v, h, _ in cases.values()])
    s.send(*[s.event(t, "good-1") for t in ("OrderCreated", "PaymentAuthorized", "InventoryReserved", "ShipmentCreated")])
    w.wait_saga("good-1", lambda b: b["status"] == "completed")  # the valid saga is unaffected
    dead = s.kafka.read(s.topic("dead-letter"), lambda m: len(m) >= len(cases), timeout=60)
    reasons: dict[bytes, str] = {}
    for r in dead:
        h = r["headers"]
        key = r["key"]
        if "x-dead-letter-original-key-bytes" in h:  # the 1 MB key: cut to a prefix, its size and hash kept
            assert int(h["x-dead-letter-original-key-bytes"]) == 1 << 20 and b"key" in h["x-dead-letter-truncated"]
            key = b"k" * (1 << 20)
            assert h["x-dead-letter-original-key-sha256"].decode() == hashlib.sha256(key).hexdigest()
        reasons[key] = h["x-dead-letter-reason"].decode()
        assert len(r["value"] or b"") + len(r["key"] or b"") < 1_000_000  # within the producer's limit
    assert reasons == {k: c[4] for k, c in cases.items()}
    far = next(r for r in dead if r["key"] == b"far-over")
    assert int(far["headers"]["x-dead-letter-original-bytes"]) == 10 << 20
    assert far["headers"]["x-dead-letter-original-sha256"].decode() == hashlib.sha256(b"y" * (10 << 20)).hexdigest()
    assert far["value"] == b"y" * len(far["value"]) and far["headers"]["x-dead-letter-truncated"] == b"value"
    whole = next(r for r in dead if r["key"] == b"unknown-type")  # fits: the value whole
    assert whole["value"] == cases[b"unknown-type"][2] and "x-dead-letter-truncated" not in whole["headers"]
    # Accepted as input (under SAGA_TRACKER_MAX_EVENT_BYTES) but over the producer's request limit
    # (faust's default, 1,000,000 bytes): a prefix, and what the original was.
    under = next(r for r in dead if r["key"] == b"under-limit")
    assert int(under["headers"]["x-dead-letter-original-bytes"]) == LIMIT - 1
    assert cases[b"under-limit"][2] is not None and cases[b"under-limit"][2].startswith(under["value"])
    assert w.alive() and "Crashed" not in w.tail(10_000) and "Traceback" not in w.tail(10_000)
