"""The deadline index's key order: a deadline is swept only once it is due, never before."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as hs

from tracker.indexes import deadline_key, due_bound

times = hs.floats(min_value=1e9, max_value=4e9, allow_nan=False)


@given(due=times, now=times, saga_id=hs.text(min_size=1, max_size=30))
def test_a_deadline_is_in_the_sweep_only_when_due(due: float, now: float, saga_id: str) -> None:
    if deadline_key(due, saga_id) < due_bound(now):
        assert now >= due
    if now >= due + 0.001:  # due (to the millisecond): it is swept
        assert deadline_key(due, saga_id) < due_bound(now)


@given(a=times, b=times)
def test_keys_sort_by_due_time(a: float, b: float) -> None:
    if a + 0.001 < b:
        assert deadline_key(a, "x") < deadline_key(b, "x")
