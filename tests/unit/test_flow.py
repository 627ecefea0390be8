"""The flow figures (``/sagas/stats``, the page's diagram): kept incrementally by the census,
equal to counting the sagas afresh, and added up over workers."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as hs

from tests.unit.sagas import COMPLETIONS, Saga, action, ev, order_saga
from tracker.core import state as st
from tracker.core.census import Census
from tracker.core.flow import BUCKETS, bucket, figures, marks, merge, quantile
from tracker.core.summaries import placement, summary

STEPS = {"order": ("order", "payment", "inventory", "shipping")}


def census_of(rows: list[dict[str, Any]]) -> Counter[Any]:
    out: Counter[Any] = Counter()
    for r in rows:
        out.update(marks(r))
    return out


def test_a_saga_counts_where_it_waits_where_it_went_wrong_and_how_long_each_step_took() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga(ev("PaymentAuthorized", 112))
    row = summary(saga.d, saga.s)
    assert row["current_step"] == "inventory" and row["trouble_step"] is None
    assert row["step_seconds"] == {"payment": 12.0}  # the start step is never pending
    assert set(marks(row)) == {
        ("status", "order", "running", -1),
        ("pending", "order", "inventory", -1),
        ("took", "order", "payment", bucket(12.0)),
    }
    saga.fire()  # inventory stalls
    row = summary(saga.d, saga.s)
    assert row["trouble_step"] == "inventory" and row["status"] == st.COMPENSATING
    assert ("failed", "order", "inventory", -1) in marks(row)
    for t in ("PaymentRefunded", "OrderCancelled"):
        saga(ev(t, 150))
    assert ("compensated", "order", "inventory", -1) in marks(summary(saga.d, saga.s))


def test_a_failure_event_marks_its_own_step_even_when_another_was_pending() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga(ev("OutOfStock", 101))  # inventory failed before payment's event arrived
    assert summary(saga.d, saga.s)["trouble_step"] == "inventory"


def test_a_forced_compensation_marks_the_pending_step() -> None:
    saga = Saga()
    saga(ev("OrderCreated", 100))
    saga(action("force_compensation", 101))
    assert summary(saga.d, saga.s)["trouble_step"] == "payment"


@hs.composite
def histories(draw: Any) -> list[Any]:
    """Records of a few sagas, as a worker applies them: completions, failures, timeouts."""
    out = []
    for n in range(draw(hs.integers(1, 5))):
        sid = f"o-{n}"
        done = draw(hs.integers(1, 4))
        out += [("ev", ev(t, 100 + i, f"{sid}-c{i}", saga_id=sid)) for i, t in enumerate(COMPLETIONS[:done])]
        if done < 4:
            out.append(draw(hs.sampled_from([("fire", sid), ("ev", ev("OutOfStock", 120, f"{sid}-f", saga_id=sid))])))
            out += [
                ("ev", ev(t, 200, f"{sid}-u{t}", saga_id=sid))
                for t in draw(hs.lists(hs.sampled_from(["OrderCancelled", "PaymentRefunded"]), max_size=2))
            ]
    return out


@settings(max_examples=150, deadline=None)
@given(records=histories())
def test_the_census_kept_on_every_change_equals_counting_the_sagas_afresh(records: list[Any]) -> None:
    census, d = Census(), order_saga()
    census.rebuild(0, Counter(), Counter())
    sagas: dict[str, Saga] = {}
    for kind, x in records:
        sid = x if kind == "fire" else x.saga_id
        saga = sagas.setdefault(sid, Saga(d))
        before = placement(d, saga.state) if saga.state is not None else None
        if kind == "fire":
            if saga.state is None or saga.state.deadline is None:
                continue
            saga.fire()
        else:
            saga(x)
        census.change(0, before, summary(d, saga.s))
    afresh = census_of([summary(d, s.s) for s in sagas.values()])
    assert census.marks([0]) == afresh


def test_figures_count_each_step_with_zeros_and_the_overdue_ones_as_stuck() -> None:
    rows: list[dict[str, Any]] = [
        {"saga_type": "order", "status": "running", "current_step": "payment", "step_seconds": {"order": 0.0}},
        {"saga_type": "order", "status": "running", "current_step": "payment", "step_seconds": {"order": 0.0}},
        {"saga_type": "order", "status": "compensated", "current_step": None, "trouble_step": "inventory"},
        {"saga_type": "order", "status": "failed_needs_manual", "current_step": None, "trouble_step": "inventory"},
    ]
    overdue = [rows[0]]  # one of the two waiting at payment is past its deadline
    out = figures(STEPS, census_of(rows), overdue, {("order", "payment"): 90.0}, 100.0)
    flow = out["flow"]["order"]
    assert flow["payment"] | {"buckets": {}} == {
        "pending": 2,
        "stuck": 1,
        "failed": 0,
        "compensated": 0,
        "completed": 0,
        "buckets": {},
    }
    assert (flow["inventory"]["failed"], flow["inventory"]["compensated"], flow["inventory"]["stuck"]) == (2, 1, 1)
    assert flow["shipping"]["pending"] == 0 and flow["order"]["completed"] == 2
    assert out["counts"] == {"order": {"running": 2, "compensated": 1, "failed_needs_manual": 1}}
    assert out["stuck"] == {"order": 2} and out["oldest_in_flight_seconds"] == {"order": {"payment": 10.0}}


def test_workers_parts_add_up_and_durations_become_quantiles() -> None:
    def part(seconds: list[float]) -> dict[str, Any]:
        rows = [
            {"saga_type": "order", "status": "completed", "current_step": None, "step_seconds": {"payment": s}} for s in seconds
        ]
        return figures(STEPS, census_of(rows), [], {}, 0.0)

    merged = merge([part([3.0] * 50), part([8.0] * 45 + [400.0] * 5)])
    cell = merged["flow"]["order"]["payment"]
    assert cell["completed"] == 100 and "buckets" not in cell
    assert 2 <= cell["p50_seconds"] <= 5  # the 50th of 100 is a 3 s one: in the (2, 5] bucket
    assert 5 <= cell["p95_seconds"] <= 10
    assert merged["flow"]["order"]["shipping"]["p50_seconds"] is None


def test_quantile_interpolates_within_a_bucket_and_stops_at_the_last_bound() -> None:
    assert quantile({}, 0.5) is None
    b = bucket(30.0)
    assert BUCKETS[b] == 30 and quantile({b: 10}, 0.5) == 25.0  # halfway through (20, 30]
    assert quantile({len(BUCKETS): 3}, 0.95) == BUCKETS[-1]
