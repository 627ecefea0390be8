"""Outside input never raises anything but the documented errors (fuzzed with hypothesis)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from tracker.core.correlation import Ignored, Record
from tracker.core.definitions import saga_from_mapping, sagas_from_document
from tracker.core.errors import CorrelationError, DefinitionError, StateError
from tracker.core.events import Event
from tracker.core.summaries import BadQuery, Query
from tracker.loader import load_catalog, parse_text
from tracker.stream.decoding import read_event

CATALOG = load_catalog()
FAST = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 400)), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

json_values = hs.recursive(
    hs.none() | hs.booleans() | hs.integers(-(2**63), 2**63 - 1) | hs.floats(allow_nan=True) | hs.text(max_size=20),
    lambda children: hs.lists(children, max_size=4) | hs.dictionaries(hs.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
event_like = hs.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "type": hs.sampled_from(["OrderCreated", "PaymentAuthorized", "OrderViewed", "X"]) | json_values,
        "time": json_values,
        "occurred_at": json_values,
        "correlation_id": json_values,
        "data": hs.fixed_dictionaries({}, optional={"order_id": json_values, "customer_id": json_values}) | json_values,
    },
)
headers = hs.lists(
    hs.tuples(
        hs.sampled_from(["ce_type", "ce_id", "traceparent", "tracestate", "x"]), hs.binary(max_size=30) | hs.just(b"OrderCreated")
    ),
    max_size=4,
)


@FAST
@given(
    value=hs.binary(max_size=300) | event_like.map(orjson.dumps) | json_values.map(lambda v: orjson.dumps(v)),
    key=hs.none() | hs.binary(max_size=20),
    hdrs=headers,
    ts=hs.none() | hs.floats(-1e12, 1e13),
    topic=hs.sampled_from(["orders", "payments", "elsewhere"]),
)
def test_correlation_raises_only_its_documented_errors(
    value: bytes, key: bytes | None, hdrs: list[tuple[str, bytes]], ts: float | None, topic: str
) -> None:
    try:
        event = read_event(CATALOG, Record(topic, 0, 1, key, value, hdrs, ts), max_bytes=10_000)
    except (CorrelationError, Ignored):
        return
    assert event.saga_id and event.id and event.type and isinstance(event.time, float)
    assert Event.from_dict(orjson.loads(orjson.dumps(event.to_dict()))) == event


@FAST
@given(data=json_values | event_like)
def test_saga_log_records_decode_or_raise_state_error(data: Any) -> None:
    with contextlib.suppress(StateError):
        Event.from_dict(data)


@FAST
@given(
    params=hs.dictionaries(
        hs.sampled_from(
            ["saga_type", "status", "step", "stuck", "key", "updated_since", "sort", "order", "limit", "cursor", "other"]
        ),
        hs.text(max_size=30) | hs.sampled_from(["1e400", "-1", "nan", "inf", "500", "true", "order_fulfilment", "WyJ4Il0"]),
        max_size=6,
    )
)
def test_query_parameters_parse_or_name_the_bad_one(params: dict[str, str]) -> None:
    try:
        query = Query.parse(params, CATALOG)
    except BadQuery as exc:
        assert exc.parameter in params
        return
    query.select([], 0.0)
    Query.parse(query.to_params(), CATALOG)  # what it prints, it reads back


@FAST
@given(doc=json_values)
def test_definition_documents_load_or_raise_definition_error(doc: Any) -> None:
    with contextlib.suppress(DefinitionError):
        sagas_from_document(doc, file="fuzz.yaml")
    with contextlib.suppress(DefinitionError):
        saga_from_mapping(doc, file="fuzz.yaml")


@FAST
@given(text=hs.text(max_size=300))
def test_definition_text_loads_or_raises_definition_error(text: str) -> None:
    with contextlib.suppress(DefinitionError):
        parse_text(text, file="fuzz.yaml")


def test_pathological_inputs_are_rejected_with_a_reason() -> None:
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    cases = {
        b"\xff" * 100: "bad_encoding",
        b'{"type": "OrderCreated", "data": {"order_id": 123456789012345678901234567890}}': "no_saga_id",
        deep: "too_deep",  # orjson refuses nesting past its limit: the reason says why
        orjson.dumps({"type": "OrderCreated", "data": {"order_id": "x" * 10_000}}): "saga_id_too_long",
        orjson.dumps({"type": "OrderCreated", "data": {"order_id": "o"}, "pad": "x" * 10_000_000}): "oversized",
    }
    for value, reason in cases.items():
        try:
            read_event(CATALOG, Record("orders", 0, 0, None, value, [], 1.0), max_bytes=1_048_576)
        except CorrelationError as exc:
            assert exc.reason == reason
        else:
            raise AssertionError(reason)


def test_a_saga_with_100000_events_stays_bounded() -> None:
    from tracker.core.events import Event
    from tracker.core.machine import apply

    d = CATALOG.current["order_fulfilment"]
    state = None
    for n in range(100_000):
        etype = "OrderCreated" if n == 0 else ("PaymentAuthorized" if n % 2 else "OrderViewed")
        event = Event(saga_id="hot", saga_type=d.name, id=f"e{n}", type=etype, time=100.0 + n)
        t = apply(d, state, event, 0.0)
        state = t.state if t.state is not None else state
    assert state is not None and state.status == "running"
    assert len(state.seen) <= d.limits.seen_ids and len(state.history) <= d.limits.history
    assert state.history_dropped > 0 and len(orjson.dumps(state)) < 200_000


def test_the_readme_lists_exactly_the_reasons_the_code_dead_letters_for() -> None:
    """Walk the README's table of reasons, and every reason literal the code raises."""
    import re
    from pathlib import Path

    from tracker.stream.deadletters import REASONS

    root = Path(__file__).resolve().parents[2]
    table = re.findall(
        r"^\| `(\w+)` \| ", (root / "README.md").read_text().split("**Dead letters**")[1].split("**Compensations**")[0], re.M
    )
    assert table == list(REASONS)
    raised = set()
    for path in (root / "tracker").rglob("*.py"):
        text = path.read_text()
        raised |= set(re.findall(r'CorrelationError\(\s*"(\w+)"', text))
        raised |= set(re.findall(r'dead_letters\.send\(\s*record,\s*"(\w+)"', text))
        raised |= set(re.findall(r'^\s+reason = "(\w+)"', text, re.M))
        raised |= {f"{what}_id_too_long" for what in re.findall(r'_text\("(\w+) id"', text)}
    raised |= {"processing_error"}
    assert raised <= set(REASONS), raised - set(REASONS)
    assert {"empty", "too_deep", "bad_encoding", "oversized", "bad_record", "bad_decision"} <= raised


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"[" * 5000 + b"]" * 5000, "too_deep"),
        (b'{"a":' * 100 + b"1" + b"}" * 100, "too_deep"),
        (b'{"type": "OrderCreated", "data": {"order_id": "\xff\xfe"}}', "bad_encoding"),
        (b"\xc3\x28", "bad_encoding"),
        (b'{"s": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[" ', "not_json"),
        (b"{not json", "not_json"),
    ],
)
def test_decoding_reports_the_documented_reason(value: bytes | None, reason: str) -> None:
    from tracker.core.errors import CorrelationError
    from tracker.stream.decoding import decode

    with pytest.raises(CorrelationError) as failed:
        decode(Record("orders", 0, 0, None, value, [], 1.0), max_bytes=1_048_576)
    assert failed.value.reason == reason


def test_a_dead_letter_that_does_not_fit_keeps_a_prefix_its_size_and_hash() -> None:
    import hashlib

    from tracker.stream.deadletters import fitted, headers

    big = Record("orders", 1, 7, b"k" * 5000, b"v" * 3_000_000, [("h", b"x" * 70_000), ("small", b"s")], 1.0)
    key, value, extra = fitted(big, 1_000_000)
    said = dict(extra)
    assert key == b"k" * 1024 and value == b"v" * 65536
    assert said["x-dead-letter-original-bytes"] == b"3000000"
    assert said["x-dead-letter-original-sha256"] == hashlib.sha256(b"v" * 3_000_000).hexdigest().encode()
    assert said["x-dead-letter-original-key-bytes"] == b"5000" and said["x-dead-letter-truncated"] == b"key,value"
    out = dict(headers(big, "oversized", "too big"))
    assert "h" not in out and out["small"] == b"s" and out["x-dead-letter-dropped-headers"] == b"1"
    small = Record("orders", 0, 1, b"k", b"{}", [], 1.0)
    assert fitted(small, 1_000_000) == (b"k", b"{}", [])
