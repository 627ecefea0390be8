"""Metrics derived from transitions, each test with a fresh registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from tests.unit.sagas import COMPLETIONS, Saga, ev
from tracker.ops.metrics import Metrics


def run(saga: Saga, metrics: Metrics, *events: object) -> None:
    for e in events:
        before = saga.state
        t = saga.fire() if isinstance(e, str) else saga(e)  # type: ignore[arg-type]  # an Event
        metrics.applied(saga.d, "service", t.outcomes, before, t.state)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_completed_saga_counts_once_and_each_step_duration_once() -> None:
    metrics, saga = Metrics(CollectorRegistry()), Saga()
    run(saga, metrics, *[ev(t, 100 + 10 * i) for i, t in enumerate(COMPLETIONS)])
    assert value(metrics, "saga_tracker_sagas_total", saga_type="order", outcome="started") == 1
    assert value(metrics, "saga_tracker_sagas_total", saga_type="order", outcome="completed") == 1
    assert value(metrics, "saga_tracker_transitions_total", saga_type="order", outcome="completed") == 3
    assert value(metrics, "saga_tracker_step_duration_seconds_count", saga_type="order", step="payment") == 1
    assert value(metrics, "saga_tracker_step_duration_seconds_sum", saga_type="order", step="payment") == 10
    assert value(metrics, "saga_tracker_saga_duration_seconds_sum", saga_type="order", status="completed") == 30


def test_timeouts_and_compensation_attempts_by_step() -> None:
    metrics, saga = Metrics(CollectorRegistry()), Saga()
    run(
        saga,
        metrics,
        ev("OrderCreated", 100),
        ev("PaymentAuthorized", 101),
        "fire",
        ev("OrderCancelled", 150),
        "fire",
        "fire",
        "fire",
    )
    assert value(metrics, "saga_tracker_timeouts_total", saga_type="order", step="inventory") == 1
    assert value(metrics, "saga_tracker_compensations_emitted_total", saga_type="order", step="payment") == 1
    assert value(metrics, "saga_tracker_compensations_reemitted_total", saga_type="order", step="payment") == 2
    assert value(metrics, "saga_tracker_compensations_confirmed_total", saga_type="order", step="order") == 1
    assert value(metrics, "saga_tracker_sagas_total", saga_type="order", outcome="failed_needs_manual") == 1
    assert value(metrics, "saga_tracker_sagas_total", saga_type="order", outcome="completed") == 0


def test_a_scrape_shows_the_counts_tallied_since_the_last_checkpoint() -> None:
    """Counts are tallied per event and added to their counters in one pass; a scrape adds them
    first, so it never reads less than what was applied."""
    from prometheus_client import generate_latest

    metrics = Metrics(CollectorRegistry())
    for _ in range(3):
        metrics.count(metrics.routed, "here")
    assert metrics.routed.labels("here")._value.get() == 0  # not added yet
    assert b'saga_tracker_routed_events_total{route="here"} 3.0' in generate_latest(metrics.registry)
    metrics.count(metrics.routed, "here")
    assert value(metrics, "saga_tracker_routed_events_total", route="here") == 4


def test_durations_expose_what_prometheus_clients_histogram_exposes() -> None:
    """The same observations, bucket bounds included (a value equal to a bound is in its bucket)."""
    from prometheus_client import Histogram

    from tracker.ops.metrics import BUCKETS, Durations

    ours, theirs = CollectorRegistry(), CollectorRegistry()
    durations = Durations("d_seconds", "help", ("saga_type", "step"), ours)
    histogram = Histogram("d_seconds", "help", ["saga_type", "step"], buckets=BUCKETS, registry=theirs)
    observations = [0.0, 0.5, 1.0, 1.0001, 5.0, 299.9, 300.0, 86400.0, 90000.0, 3.25]
    for i, seconds in enumerate(observations):
        step = "payment" if i % 3 else "shipping"
        durations.observe(seconds, "order", step)
        histogram.labels("order", step).observe(seconds)

    def samples(registry: CollectorRegistry) -> list[tuple[str, list[tuple[str, str]], float]]:
        return sorted(
            (s.name, sorted(s.labels.items()), s.value)
            for family in registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        )

    assert samples(ours) == samples(theirs)
    assert value_of(ours, "d_seconds_count", saga_type="order", step="payment") == 6
    assert value_of(ours, "d_seconds_bucket", saga_type="order", step="payment", le="1.0") == 2  # 0.5 and 1.0


def value_of(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0
