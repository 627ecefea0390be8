"""Prometheus metrics, built from an injected registry (one per app; a fresh one per test).

Labels are bounded: saga type, step and outcome names come from the definitions and the
machine, dead-letter reasons from a fixed set; never a saga id. The step and saga durations
are observed as records are applied, into plain bucket counts (``Durations``). The counters
an event moves (``count``) are tallied in a plain dict and added to their Prometheus children
in one pass (``flush``): at every checkpoint and before every scrape (``Tally``, the
registry's first collector), so a scrape never shows less than what was applied. Gauges are
read at scrape time from in-memory counts and per-step seeks in the owned partitions
(``StateCollector``), never from a table scan.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from tracker.core import state as st
from tracker.core.definitions import SagaDefinition
from tracker.core.state import SagaState

# Seconds to hours: choreographed steps take from a second to a working day.
BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400)
# Machine outcome -> the saga milestone it counts as.
_MILESTONES = {
    "started": "started",
    "saga_completed": "completed",
    "compensated": "compensated",
    "failed_needs_manual": "failed_needs_manual",
}


class Tally(Collector):
    """Adds the tallied counts to their counters before a scrape reads them. Registered before
    every metric of the registry (a registry collects in registration order); yields nothing."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        self.metrics.flush()
        return iter(())


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._children: dict[tuple[Any, ...], Any] = {}
        # Counts per child not yet added to it: a Counter.inc takes a lock and a value object per
        # call, several times per event; a dict addition does not.
        self._tally: dict[Any, int] = {}
        # The counters one applied record adds to, by (saga type, kind, outcomes): a few dozen
        # combinations happen, each looked up once per record instead of a child per counter.
        self._applied: dict[tuple[str, str, tuple[str, ...]], tuple[Any, ...]] = {}
        registry.register(Tally(self))
        r = registry
        self.input_records = Counter(
            "saga_tracker_input_records_total", "Records read from the services' topics.", ["topic"], registry=r
        )
        self.routed = Counter(
            "saga_tracker_routed_events_total",
            "Service events by route: applied where they were read (their saga's state partition is active "
            "on this worker), or re-keyed onto the saga log.",
            ["route"],
            registry=r,
        )
        self.dead_letters = Counter(
            "saga_tracker_dead_letters_total", "Records sent to the dead-letter topic, by reason.", ["reason"], registry=r
        )
        self.drift = Counter(
            "saga_tracker_drift_total",
            "Traffic that drifts from the definitions (tracker.core.conformance): undeclared_event_type, "
            "steps_out_of_order, completed_after_timeout, unrequested_confirmation.",
            ["saga_type", "drift"],
            registry=r,
        )
        self.ignored = Counter(
            "saga_tracker_ignored_events_total", "Events the definitions declare irrelevant.", ["saga_type"], registry=r
        )
        self.events = Counter(
            "saga_tracker_events_total",
            "Records applied to sagas, by kind (service, timeout, control).",
            ["saga_type", "kind"],
            registry=r,
        )
        self.transitions = Counter(
            "saga_tracker_transitions_total",
            "What applying a record did: completed, reordered, duplicate, early, late, orphaned, rejected, ...",
            ["saga_type", "outcome"],
            registry=r,
        )
        self.sagas = Counter(
            "saga_tracker_sagas_total",
            "Sagas reaching a milestone: started, completed, compensated, failed_needs_manual.",
            ["saga_type", "outcome"],
            registry=r,
        )
        self.timeouts = Counter(
            "saga_tracker_timeouts_total",
            "Step deadlines that passed and started compensation.",
            ["saga_type", "step"],
            registry=r,
        )
        self.comp_emitted = Counter(
            "saga_tracker_compensations_emitted_total",
            "Compensation events emitted by the tracker (first attempt).",
            ["saga_type", "step"],
            registry=r,
        )
        self.comp_reemitted = Counter(
            "saga_tracker_compensations_reemitted_total",
            "Compensation events re-emitted after an unconfirmed attempt.",
            ["saga_type", "step"],
            registry=r,
        )
        self.comp_confirmed = Counter(
            "saga_tracker_compensations_confirmed_total",
            "Compensations confirmed by the services.",
            ["saga_type", "step"],
            registry=r,
        )
        self.step_duration = Durations(
            "saga_tracker_step_duration_seconds",
            "From a step becoming pending to its completion (event times).",
            ("saga_type", "step"),
            r,
        )
        self.saga_duration = Durations(
            "saga_tracker_saga_duration_seconds",
            "From a saga's start to its end state (event times).",
            ("saga_type", "status"),
            r,
        )
        self.emitted = Counter(
            "saga_tracker_emitted_total",
            "Events the tracker sent (compensation, outcome), re-sends included.",
            ["kind"],
            registry=r,
        )
        self.hot_reads = Counter(
            "saga_tracker_hot_state_reads_total",
            "Saga states the track processor read per event: 'hit' (kept decoded since its last change, "
            "SAGA_TRACKER_HOT_SAGAS) or 'miss' (read from the store and decoded).",
            ["result"],
            registry=r,
        )
        self.state_rows_written = Counter(
            "saga_tracker_state_rows_written_total",
            "Saga state rows written to the store and the changelog: 'through' (no row cache, "
            "SAGA_TRACKER_STATE_CACHE_ROWS=0) or 'flush' (cached rows, before a commit or when the cache is "
            "full). Against saga_tracker_events_total it shows how many changes the cache saved.",
            ["how"],
            registry=r,
        )
        self.state_rows_cached = Gauge(
            "saga_tracker_state_rows_cached",
            "Saga state rows changed since the last commit and not yet written (SAGA_TRACKER_STATE_CACHE_ROWS).",
            registry=r,
        )
        self.sweep_cpu = Counter(
            "saga_tracker_sweep_cpu_seconds_total",
            "CPU time of the sweeps' own code: reading the due deadlines and deciding what to send "
            "(not the lag measurement's broker round trips, not the produce path).",
            registry=r,
        )
        self.sweep_duration = Histogram(
            "saga_tracker_sweep_duration_seconds",
            "Time one deadline sweep took (lag measurement included); its sum over time is the sweep's share.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.timeouts_sent = Counter(
            "saga_tracker_timeout_records_sent_total", "Timeout records the sweeper sent for due deadlines.", registry=r
        )
        self.timeouts_deferred = Counter(
            "saga_tracker_timeout_records_deferred_total",
            "Timeout records set aside because this worker was behind (a zombie's, or sent before a "
            "rebalance); the deadline stays indexed and is swept again once caught up.",
            registry=r,
        )
        self.timeouts_suppressed = Gauge(
            "saga_tracker_timeouts_suppressed", "1 while this worker is behind on its input and fires no timeouts.", registry=r
        )
        self.input_lag = Gauge(
            "saga_tracker_input_lag_records",
            "Unprocessed records per input partition (the group's, for service topics).",
            ["topic", "partition"],
            registry=r,
        )
        self.index_rebuild_duration = Histogram(
            "saga_tracker_index_rebuild_duration_seconds",
            "Time to build one partition's local indexes (summaries, pending, deadlines) from its saga "
            "state: on start, when the partition moves here, and after a changelog recovery changed it.",
            buckets=(0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
            registry=r,
        )
        self.restored_records = Counter(
            "saga_tracker_changelog_restored_records_total",
            "Changelog records written to the saga store in batches before faust's own recovery "
            "(which reads what is left record by record).",
            registry=r,
        )
        self.store_resets = Counter(
            "saga_tracker_store_resets_total",
            "Partition stores removed and restored from their changelog: found ahead of it (the topic was "
            "deleted or recreated under a kept volume), or left by a stop that was not clean (a crash, a kill).",
            registry=r,
        )
        self.processing_errors = Counter(
            "saga_tracker_processing_errors_total", "Records whose processing raised (dead-lettered).", ["stage"], registry=r
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: looked up several times per event."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def count(self, metric: Any, *labels: str) -> None:
        """One more for ``metric.labels(*labels)``, tallied until the next ``flush``."""
        self.tally(self.child(metric, *labels))

    def tally(self, child: Any) -> None:
        """One more for a labelled ``child`` (``child(...)``, kept by a caller that counts it per event)."""
        tally = self._tally
        tally[child] = tally.get(child, 0) + 1

    def flush(self) -> None:
        """Add the tallied counts to their counters (the checkpoint, and before a scrape)."""
        if self._tally:
            tally, self._tally = self._tally, {}
            for child, n in tally.items():
                child.inc(n)

    def applied(
        self, definition: SagaDefinition, kind: str, outcomes: Iterable[str], old: SagaState | None, new: SagaState | None
    ) -> None:
        saga_type = definition.name
        happened = outcomes if isinstance(outcomes, tuple) else tuple(outcomes)
        children = self._applied.get((saga_type, kind, happened))
        if children is None:
            children = self._counted(saga_type, kind, happened)
        tally = self._tally
        for counted in children:
            tally[counted] = tally.get(counted, 0) + 1
        if new is None or new is old:
            return
        before = old.steps if old is not None and old.steps else [None] * len(new.steps)
        count = self.count
        for spec, was, now in zip(definition.steps, before, new.steps, strict=False):
            if was is not None and now.__dict__ == was.__dict__:
                continue  # the common case: a step this record did not touch
            name = spec.name
            if now.state == st.TIMED_OUT and (was is None or was.state != st.TIMED_OUT):
                count(self.timeouts, saga_type, name)
            for attempt in range((was.comp_attempts if was else 0) + 1, now.comp_attempts + 1):
                count(self.comp_emitted if attempt == 1 else self.comp_reemitted, saga_type, name)
            if now.comp_confirmed_at is not None and (was is None or was.comp_confirmed_at is None):
                count(self.comp_confirmed, saga_type, name)
            if now.completed_at is not None and (was is None or was.completed_at is None) and now.started_at is not None:
                self.step_duration.observe(max(0.0, now.completed_at - now.started_at), saga_type, name)
        if new.terminal and (old is None or not old.terminal) and new.started_at is not None and new.ended_at is not None:
            self.saga_duration.observe(max(0.0, new.ended_at - new.started_at), saga_type, new.status)

    def _counted(self, saga_type: str, kind: str, outcomes: tuple[str, ...]) -> tuple[Any, ...]:
        """The children a record of ``kind`` with ``outcomes`` counts in: events, transitions, and
        the sagas' milestones; remembered (bounded: outcomes come from the machine's vocabulary,
        but their combinations are not declared anywhere)."""
        children = [self.child(self.events, saga_type, kind)]
        for outcome in outcomes:
            children.append(self.child(self.transitions, saga_type, outcome))
            milestone = _MILESTONES.get(outcome)
            if milestone is not None:
                children.append(self.child(self.sagas, saga_type, milestone))
        if len(self._applied) < 4096:
            self._applied[(saga_type, kind, outcomes)] = tuple(children)
        return tuple(children)


class Durations(Collector):
    """A histogram of durations (seconds, ``BUCKETS``) by two labels, kept as plain bucket counts
    and exposed as a histogram family when scraped: the same samples as prometheus-client's
    ``Histogram`` (``_bucket``, ``_count``, ``_sum``; not ``_created``). Its ``observe`` takes a
    lock for the sum and another for the bucket, ~2 µs per completed step on the hot path, where
    this is a bisect and two additions. Observed and scraped on the event loop's thread only."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, str], registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.bounds = [float(b) for b in BUCKETS]
        self.les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        # labels -> observations per bucket (not cumulative; the last one is +Inf), then their sum
        self.series: dict[tuple[str, ...], list[float]] = {}
        registry.register(self)

    def observe(self, seconds: float, *labels: str) -> None:
        counts = self.series.get(labels)
        if counts is None:
            counts = self.series[labels] = [0] * (len(self.bounds) + 1) + [0.0]
        counts[bisect_left(self.bounds, seconds)] += 1  # the first bucket whose bound is >= seconds
        counts[-1] += seconds

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labels)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, counts in self.series.items():
            cumulative, buckets = 0.0, []
            for le, n in zip(self.les, counts, strict=False):
                cumulative += n
                buckets.append((le, cumulative))
            family.add_metric(list(labels), buckets, sum_value=counts[-1])
        yield family


class StateCollector(Collector):
    """Gauges computed at scrape time from what the worker keeps in memory or can seek to."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "saga_tracker_sagas_in_flight",
                "Sagas owned by this worker that are not finished, by type, status and pending step.",
                labels=["saga_type", "status", "step"],
            ),
            GaugeMetricFamily(
                "saga_tracker_sagas_stuck",
                "Sagas past a deadline nobody acted on yet, or failed_needs_manual, by type and step.",
                labels=["saga_type", "step"],
            ),
            GaugeMetricFamily(
                "saga_tracker_oldest_in_flight_age_seconds",
                "Age of the oldest saga pending at each step (since the step became pending).",
                labels=["saga_type", "step"],
            ),
            GaugeMetricFamily("saga_tracker_ready", "1 when partitions are assigned and tables recovered."),
            GaugeMetricFamily("saga_tracker_recovering", "1 while table state is being recovered from changelogs."),
            GaugeMetricFamily("saga_tracker_recovery_remaining_records", "Changelog records left to recover."),
        ]

    def collect(self) -> Iterator[Metric]:
        in_flight, stuck, oldest, ready, recovering, remaining = self._families()
        data = self.read()
        for (saga_type, status, step), n in sorted(data["in_flight"].items()):
            in_flight.add_metric([saga_type, status, step], n)
        for (saga_type, step), n in sorted(data["stuck"].items()):
            stuck.add_metric([saga_type, step], n)
        for (saga_type, step), age in sorted(data["oldest"].items()):
            oldest.add_metric([saga_type, step], age)
        ready.add_metric([], 1 if data["ready"] else 0)
        recovering.add_metric([], 1 if data["recovering"] else 0)
        remaining.add_metric([], data["remaining"])
        yield from (in_flight, stuck, oldest, ready, recovering, remaining)
