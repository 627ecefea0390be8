"""Fuzzed operator-action bodies: accepted with a well-formed record, or refused naming the parameter."""

from __future__ import annotations

import os
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from tracker.core.events import ACTIONS
from tracker.web.actions import BadAction, parse_action

FAST = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 400)), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
scalars = hs.one_of(hs.none(), hs.booleans(), hs.integers(), hs.floats(allow_nan=True), hs.text(max_size=300))
values = hs.recursive(
    scalars, lambda c: hs.lists(c, max_size=4) | hs.dictionaries(hs.text(max_size=10), c, max_size=4), max_leaves=10
)
bodies = hs.fixed_dictionaries(
    {},
    optional={
        "action": hs.one_of(hs.sampled_from(ACTIONS), values),
        "actor": values,
        "reason": values,
        "seconds": values,
        "id": values,
    },
)


def check(raw: bytes, header: str | None) -> None:
    try:
        details, key = parse_action(raw, header)
    except BadAction as exc:
        assert exc.parameter in ("body", "action", "actor", "reason", "seconds", "id") and exc.message
        return
    assert details["action"] in ACTIONS and details["actor"] and 0 < len(key) <= 200
    orjson.dumps(details)  # it becomes a saga-log record


@FAST
@given(bodies, hs.one_of(hs.none(), hs.text(max_size=250)))
def test_action_bodies_parse_or_name_the_bad_parameter(body: dict[str, Any], header: str | None) -> None:
    check(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS) if _serialisable(body) else b"{", header or None)


@FAST
@given(hs.binary(max_size=2000))
def test_arbitrary_bytes_as_an_action_body(raw: bytes) -> None:
    check(raw, None)


def _serialisable(body: Any) -> bool:
    try:
        orjson.dumps(body)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True
