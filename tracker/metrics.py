"""Prometheus metrics, built from an injected registry (one per app; a fresh one per test).

Labels are bounded: saga type, step and outcome names come from the definitions and the
machine, dead-letter reasons from a fixed set; never a saga id.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

# Machine outcomes that have their own counter; every outcome also counts in transitions.
_SAGA_OUTCOMES = {
    "started": "started",
    "completed": "completed",
    "compensated": "compensated",
    "failed_needs_manual": "failed_needs_manual",
}


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.input_records = Counter(
            "saga_tracker_input_records_total", "Records read from the services' topics.", ["topic"], registry=registry
        )
        self.dead_letters = Counter(
            "saga_tracker_dead_letters_total", "Records sent to the dead-letter topic, by reason.", ["reason"], registry=registry
        )
        self.ignored = Counter(
            "saga_tracker_ignored_events_total", "Events the definitions declare irrelevant.", ["saga_type"], registry=registry
        )
        self.events = Counter(
            "saga_tracker_events_total",
            "Records applied to sagas, by kind (service, timeout, control).",
            ["saga_type", "kind"],
            registry=registry,
        )
        self.transitions = Counter(
            "saga_tracker_transitions_total",
            "What applying a record did: completed, reordered, duplicate, early, late, timeout, ...",
            ["saga_type", "outcome"],
            registry=registry,
        )
        self.sagas = Counter(
            "saga_tracker_sagas_total",
            "Sagas reaching a milestone: started, completed, compensated, failed_needs_manual.",
            ["saga_type", "outcome"],
            registry=registry,
        )
        self.emitted = Counter(
            "saga_tracker_emitted_total",
            "Events the tracker sent (compensation, outcome), re-sends included.",
            ["kind"],
            registry=registry,
        )
        self.timeouts_sent = Counter(
            "saga_tracker_timeouts_sent_total", "Timeout records the sweeper sent for due deadlines.", registry=registry
        )
        self.deadlines_due = Gauge(
            "saga_tracker_deadlines_due", "Deadlines past due on this worker's partitions at the last sweep.", registry=registry
        )
        self.timeouts_suppressed = Gauge(
            "saga_tracker_timeouts_suppressed",
            "1 while this worker is behind on its input and fires no timeouts.",
            registry=registry,
        )
        self.input_lag = Gauge(
            "saga_tracker_input_lag_records",
            "Unread records per input partition owned by this worker.",
            ["topic", "partition"],
            registry=registry,
        )
        self.processing_errors = Counter(
            "saga_tracker_processing_errors_total",
            "Records whose processing raised (dead-lettered).",
            ["stage"],
            registry=registry,
        )

    def applied(self, saga_type: str, kind: str, outcomes: Iterable[str]) -> None:
        self.events.labels(saga_type, kind).inc()
        for outcome in outcomes:
            self.transitions.labels(saga_type, outcome).inc()
            milestone = _SAGA_OUTCOMES.get(outcome)
            if milestone:
                self.sagas.labels(saga_type, milestone).inc()
