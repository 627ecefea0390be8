"""The faust app: topics, tables, the ingest and track agents, the sweeper, the web views.

A thin shell: every saga rule is in ``machine``; this module only moves bytes.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.types import TP, AppT
from prometheus_client import CollectorRegistry

import tables as tables_module
import topics as topics_module
from tables import Tables, on_changelog_applied, partition_items
from topics import Topics
from tracker.core.census import Census
from tracker.core.correlation import Record
from tracker.core.definitions import Catalog
from tracker.core.state import FAILED_NEEDS_MANUAL
from tracker.generations.registry import Generations
from tracker.kafka import internals as patches
from tracker.kafka.admin import bootstrap_of
from tracker.ops.metrics import Metrics, StateCollector
from tracker.ops.settings import Settings
from tracker.stream.catchup import Progress
from tracker.stream.deadletters import DeadLetters
from tracker.stream.indexes import Indexes, pending_prefix
from tracker.stream.ingest import Ingest, record_of
from tracker.stream.restore import Restore
from tracker.stream.state_cache import Changelog
from tracker.stream.sweeper import Sweeper
from tracker.stream.tracking import Crash, Tracking
from tracker.web import views as web

log = logging.getLogger(__name__)


@dataclass
class TrackerApp:
    app: faust.App
    settings: Settings
    catalog: Catalog
    topics: Topics
    tables: Tables
    indexes: Indexes
    metrics: Metrics
    ingest: Ingest
    tracking: Tracking
    sweeper: Sweeper
    progress: Progress
    generations: Generations


def faust_app(settings: Settings, broker_url: str) -> faust.App:
    patches.apply()
    return faust.App(
        settings.group_id,
        broker=broker_url,
        store="rocksdb://",
        datadir=settings.data_dir,
        autodiscover=False,
        processing_guarantee="at_least_once",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        broker_rebalance_timeout=settings.rebalance_timeout,
        producer_max_batch_size=settings.producer_max_batch_size,
        # Batches of one record: a linger batches nothing, it only delays a record no other follows.
        producer_linger=settings.producer_linger_ms / 1000 if settings.producer_max_batch_size > 1 else 0.0,
        consumer_max_fetch_size=settings.fetch_max_bytes,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        canonical_url=settings.canonical_url or f"http://{settings.web_host}:{settings.web_port}",
        key_serializer="raw",
        value_serializer="raw",
    )


def build(
    settings: Settings, catalog: Catalog, *, broker_url: str | None = None, registry: CollectorRegistry | None = None
) -> TrackerApp:
    app = faust_app(settings, broker_url or settings.broker)
    bootstrap = bootstrap_of(broker_url or settings.broker)
    topics = topics_module.declare(app, settings, catalog)
    tables = tables_module.declare(app, settings)
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    progress = Progress(app, [*catalog.topics, settings.decisions], settings.saga_log, bootstrap, settings.lag_threshold)
    progress.wedged_after = settings.stall_timeout
    generations = Generations(bootstrap, settings.generations, settings.generation, settings.shadow, str(app.conf.canonical_url))
    dead_letters = DeadLetters(topics.dead_letters, metrics)
    ingest = Ingest(
        catalog,
        topics.saga_log,
        dead_letters,
        metrics,
        max_event_bytes=settings.max_event_bytes,
        decisions=settings.decisions,
        generation=settings.generation,
        partitions=settings.partitions,
        owned=lambda partition: owned(app, tables, partition),
    )
    census = Census()
    indexes = Indexes(
        Path(settings.data_dir) / f"{settings.group_id}-indexes",
        catalog,
        lambda partition, start: partition_items(tables.sagas, partition, start),
        census,
        metrics,
    )
    on_changelog_applied(tables.sagas, indexes.invalidate)
    # faust gives up waiting for the step the restore runs in after its broker request timeout.
    restore = Restore(tables.sagas, bootstrap, settings.fetch_max_bytes, metrics, indexes.invalidate)
    manager: Any = app.tables
    restore.install(manager.recovery, budget=0.5 * float(app.conf.broker_request_timeout))
    sweeper = Sweeper(
        app,
        tables,
        topics.saga_log,
        progress,
        metrics,
        indexes,
        resend_after=max(30.0, 10 * settings.sweep_interval),
        # A follower generation re-applies the promoted one's decisions; a shadow decides for itself.
        may_fire=lambda: generations.active or generations.shadow,
    )
    writes = Changelog(tables.sagas, cache_rows=settings.state_cache_rows, frozen_after=settings.session_timeout, metrics=metrics)
    _flush_cache_first(app, writes)
    tracking = Tracking(
        catalog,
        tables,
        {
            "compensation": topics.compensations,
            "outcome": topics.outcomes,
            "decision": topics.decisions,
            "shadow": topics.shadow,
        },
        dead_letters,
        metrics,
        census,
        indexes,
        crash=Crash(settings.crash_point, settings.crash_marker),
        role=generations,
        caught_up=lambda: not sweeper.behind,
        deferred=sweeper.forget,
        writes=writes,
    )
    ingest.apply_here = tracking.apply_here
    tracker = TrackerApp(
        app, settings, catalog, topics, tables, indexes, metrics, ingest, tracking, sweeper, progress, generations
    )
    metrics.registry.register(StateCollector(lambda: gauges(tracker, census)))
    _wire(tracker)
    return tracker


def _flush_cache_first(app: AppT, writes: Changelog) -> None:
    """Every producer flush writes the cached state rows first. faust flushes the producer
    before it commits input offsets (periodically, and when partitions are revoked), so no
    offset is committed before the state it caused is in the changelog."""
    producer: Any = app.producer
    flush = producer.flush

    async def flush_cache_first() -> None:
        await writes.flush()
        await flush()

    producer.flush = flush_cache_first


def owned(app: Any, tables: Tables, partition: int) -> bool:
    """The saga state's ``partition`` is active here, not a standby."""
    return bool(app.assignor.is_active(TP(tables.sagas.changelog_topic.get_topic_name(), partition)))


def gauges(t: TrackerApp, census: Census) -> dict[str, Any]:
    """What the state gauges show, from memory and a seek per step: no table scan."""
    in_flight = census.total()
    stuck: Counter[tuple[str, str]] = Counter(t.sweeper.due)
    for (saga_type, status, step), n in in_flight.items():
        if status == FAILED_NEEDS_MANUAL:
            stuck[(saga_type, step)] += n
    now = time.time()
    oldest: dict[tuple[str, str], float] = {}
    for partition in t.sweeper.active_partitions():
        index = t.indexes.cached(partition)
        if index is None:
            continue
        for d in t.catalog.current.values():
            for spec in d.steps:
                since = index.oldest_pending(pending_prefix(d.name, spec.name))
                if since is not None:
                    oldest[(d.name, spec.name)] = max(oldest.get((d.name, spec.name), 0.0), now - since)
    app: Any = t.app
    recovering = bool(app.in_recovery)
    return {
        "in_flight": in_flight,
        "stuck": stuck,
        "oldest": oldest,
        "ready": t.sweeper.ready(),
        "recovering": recovering,
        "remaining": app.tables.recovery.active_remaining_total() if recovering else 0,
    }


def _wire(t: TrackerApp) -> None:
    app, progress = t.app, t.progress

    def agent(topic: faust.TopicT, name: str, handle: Callable[[Record], Awaitable[Any]]) -> None:
        async def consume(stream: Any) -> None:
            async for event in stream.events():
                record = record_of(event)
                await handle(record)  # never raises: failures are dead-lettered per record
                progress.processed(event.message.tp, record.offset)

        # Concurrency 1: faust may commit past an in-flight message otherwise (#606).
        app.agent(topic, name=f"{t.settings.group_id}-{name}", concurrency=1)(consume)

    agent(t.topics.sources, "ingest", t.ingest.handle)
    agent(t.topics.saga_log, "track", t.tracking.handle)

    @app.timer(t.settings.sweep_interval)
    async def sweep() -> None:
        try:
            with t.metrics.sweep_duration.time():
                await t.sweeper.sweep()
        except Exception:  # a timer that raises stops forever: log, count, go on next time
            log.exception("deadline sweep failed")
            t.metrics.processing_errors.labels("sweep").inc()

    @app.timer(0.25)
    async def index() -> None:
        """Rebuild the local indexes of partitions that moved here, as soon as their saga
        state is recovered (readiness waits for it; the sweep may run only every hour)."""
        try:
            if not t.sweeper.recovering():
                await t.indexes.refresh(t.sweeper.active_partitions())
        except Exception:
            log.exception("index rebuild failed")
            t.metrics.processing_errors.labels("index").inc()

    @app.timer(1.0)
    async def alive() -> None:
        """Notice a freeze longer than the session timeout even while no state is written."""
        if isinstance(t.tracking.writes, Changelog):
            t.tracking.writes.alive()

    stall = t.settings.stall_timeout

    @app.timer(5.0)
    async def producer_watchdog() -> None:
        """Fail loudly rather than hang: a producer that hands nothing to the broker for
        ``stall_timeout`` seconds while records wait (a broker that stopped answering) blocks
        commits and catch-up for good. Exiting lets the orchestrator restart the worker,
        which reprocesses from the committed offsets (at-least-once)."""
        buffer: Any = app.producer.buffer
        changelog = t.tracking.writes
        in_flight = changelog.in_flight if isinstance(changelog, Changelog) else 0
        waiting = buffer.size + getattr(buffer, "_saga_tracker_in_hand", 0) + in_flight
        moved = getattr(buffer, "_saga_tracker_moved", None)
        if moved is not None and isinstance(changelog, Changelog):
            moved = max(moved, changelog.moved)  # saga state goes to the producer directly
        if stall and waiting and moved is not None and time.monotonic() - moved > stall:
            log.critical("producer stalled: %d records waiting, none sent for %.0fs; exiting to restart", waiting, stall)
            os._exit(70)
        if not waiting:
            buffer._saga_tracker_moved = time.monotonic()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        progress.forget(args[0] if args else kwargs.get("revoked", ()))
        t.indexes.moved()
        t.sweeper.set_behind(True)  # timeout records wait until the new catch-up is done

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        progress.restart()
        t.indexes.moved()  # kept where the partition stayed and its changelog did not move
        t.sweeper.set_behind(True)

    @app.service
    class Background(faust.Service):  # type: ignore[misc]
        """The generations registry, and the lag clients closed on the way out."""

        async def on_start(self) -> None:
            await t.generations.start(follow=t.settings.follow_generations)

        async def on_stop(self) -> None:
            await t.generations.stop()
            await progress.close()
            t.indexes.close()

    api = web.Api(
        app, t.settings, t.catalog, t.tables, t.indexes, t.metrics, t.sweeper, t.topics.saga_log, state=t.tracking.writes.get
    )
    web.register(app, api, t.generations)
