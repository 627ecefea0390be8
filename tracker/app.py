"""Composition: build the faust app and wire the processors, the checkpoint, the lifecycle and
the web views together. No behaviour lives here; ``docs/architecture.md`` draws the result.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.types import TP
from prometheus_client import CollectorRegistry

import tables as tables_module
import topics as topics_module
from tables import Tables
from topics import Topics
from tracker.core.census import Census
from tracker.core.conformance import Conformance
from tracker.core.correlation import Record
from tracker.core.definitions import Catalog
from tracker.core.state import FAILED_NEEDS_MANUAL
from tracker.generations.registry import Generations
from tracker.kafka import clients, internals, records
from tracker.kafka.admin import bootstrap_of
from tracker.kafka.outgoing import Outgoing
from tracker.kafka.partitioner import Partitioner
from tracker.ops.metrics import Metrics, StateCollector
from tracker.ops.settings import Settings
from tracker.stream.backlog import Backlog
from tracker.stream.catchup import Progress
from tracker.stream.checkpoint import Checkpoint
from tracker.stream.context import FaustContext, state_changelog
from tracker.stream.deadletters import DeadLetters
from tracker.stream.feed import Feed
from tracker.stream.group import FaustGroup
from tracker.stream.indexes import Indexes, pending_prefix
from tracker.stream.ingest import Ingest
from tracker.stream.lifecycle import Lifecycle
from tracker.stream.restart import exit_to_restart
from tracker.stream.restore import Restore
from tracker.stream.state_cache import StateCache
from tracker.stream.status import WorkerStatus
from tracker.stream.sweeper import Sweeper
from tracker.stream.tracking import SendHooks, Tracking
from tracker.web import views
from tracker.web.actions import MAX_BODY
from tracker.web.batches import Batches


@dataclass
class TrackerApp:
    app: faust.App
    settings: Settings
    catalog: Catalog
    topics: Topics
    tables: Tables
    indexes: Indexes
    metrics: Metrics
    context: FaustContext
    checkpoint: Checkpoint
    state: StateCache
    ingest: Ingest
    feed: Feed
    tracking: Tracking
    sweeper: Sweeper
    progress: Progress
    generations: Generations
    status: WorkerStatus


def faust_app(settings: Settings, broker_url: str) -> faust.App:
    internals.install_client_fixes()
    return faust.App(
        settings.group_id,
        broker=broker_url,
        store="rocksdb://",
        datadir=settings.data_dir,
        autodiscover=False,
        processing_guarantee="at_least_once",
        stream_wait_empty=True,  # faust's default, relied on: the feed finishes there (``internals.after_wait_empty``)
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_commit_interval=settings.commit_interval,
        producer_max_batch_size=settings.producer_max_batch_size,
        producer_partitioner=Partitioner(),  # the default partitioner's hashes, remembered
        # Batches of one record: a linger batches nothing, it only delays a record no other follows.
        producer_linger=settings.producer_linger_ms / 1000 if settings.producer_max_batch_size > 1 else 0.0,
        consumer_max_fetch_size=settings.fetch_max_bytes,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        canonical_url=settings.canonical_url or f"http://{settings.web_host}:{settings.web_port}",
        # Request bodies (operator actions) are small: a larger one is refused before it is read whole.
        web_application_options={"client_max_size": MAX_BODY},
        key_serializer="raw",
        value_serializer="raw",
    )


def build(
    settings: Settings,
    catalog: Catalog,
    *,
    broker_url: str | None = None,
    registry: CollectorRegistry | None = None,
    hooks: SendHooks | None = None,
) -> TrackerApp:
    """``hooks``: called around compensation sends; only the crash tests install any."""
    app = faust_app(settings, broker_url or settings.broker)
    bootstrap = bootstrap_of(broker_url or settings.broker)
    topics = topics_module.declare(app, settings, catalog)
    tables = tables_module.declare(app, settings)
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    census = Census()
    conformance = Conformance()  # drift from the definitions: tallied by ingest and tracking, shown by the API
    indexes = Indexes(
        Path(settings.data_dir) / f"{settings.group_id}-indexes",
        catalog,
        lambda partition, start: internals.partition_items(tables.sagas, partition, start),
        census,
        metrics,
    )
    outgoing = Outgoing(app)  # every record the worker produces, handed over in whole batches
    state = StateCache(
        tables.sagas,
        producer=outgoing,
        cache_rows=settings.state_cache_rows,
        frozen_after=settings.session_timeout,
        metrics=metrics,
        derived=indexes,
    )
    sources = [*catalog.topics, settings.decisions]  # the feed's topics, and catch-up's
    progress = Progress(app, sources, settings.saga_log, bootstrap, settings.lag_threshold)
    progress.wedged_after = settings.stall_timeout
    generations = Generations(bootstrap, settings.generations, settings.generation, settings.shadow, str(app.conf.canonical_url))
    internals.on_changelog_applied(tables.sagas, indexes.invalidate)
    restore = Restore(tables.sagas, bootstrap, settings.fetch_max_bytes, metrics, indexes.invalidate)
    # faust gives up waiting for the step the restore runs in after its broker request timeout.
    budget = 0.5 * float(app.conf.broker_request_timeout)

    async def restore_active(tps: set[TP], offsets: Any, ends: Mapping[TP, int | None], stop: Callable[[], bool]) -> None:
        restore.heal(tps, offsets, ends)
        await restore.run(tps, offsets, ends, budget, stop)

    internals.after_active_offsets(app, restore_active)
    sweeper = Sweeper(
        progress,
        metrics,
        indexes,
        interval=settings.sweep_interval,
        resend_after=max(30.0, 10 * settings.sweep_interval),
        # A follower generation re-applies the promoted one's decisions; a shadow decides for itself.
        may_fire=lambda: generations.active or generations.shadow,
    )
    dead_letters = DeadLetters(metrics, max_record_bytes=int(app.conf.producer_max_request_size))
    tracking = Tracking(
        catalog,
        state,
        dead_letters,
        metrics,
        indexes,
        role=generations,
        deadlines=sweeper,
        hooks=hooks,
        conformance=conformance,
        hot_sagas=settings.hot_sagas,
    )
    backlog = Backlog(generations, progress, settings.saga_log)
    ingest = Ingest(
        catalog,
        tracking,
        dead_letters,
        metrics,
        backlog,
        max_event_bytes=settings.max_event_bytes,
        decisions=settings.decisions,
        generation=settings.generation,
        partitions=settings.partitions,
        conformance=conformance,
    )
    feed = Feed(
        ingest,
        progress,
        FaustGroup(app, sources, progress),
        commit_interval=float(app.conf.broker_commit_interval),
        finish_within=0.5 * settings.session_timeout,
        reset=str(app.conf.consumer_auto_offset_reset),
        outputs=outgoing,
    )
    checkpoint = Checkpoint(state, metrics, inputs=[feed], outgoing=outgoing)
    internals.before_commit(app, checkpoint.commit)

    async def closing() -> None:
        """A revocation or a stop, stores still open: the feed's record in hand, the checkpoint,
        then every store's memtable to its files (rows are written without RocksDB's WAL)."""
        await feed.finish()
        state.persist()

    internals.after_wait_empty(app, closing)
    context = FaustContext(
        app,
        {
            "saga_log": topics.saga_log,
            "compensation": topics.compensations,
            "outcome": topics.outcomes,
            "decision": topics.decisions,
            "shadow": topics.shadow,
            "dead_letter": topics.dead_letters,
        },
        state_changelog(tables.sagas),
        metrics,
        outgoing,
        checkpoint,
    )
    lifecycle = Lifecycle(
        app,
        feed,
        progress,
        indexes,
        sweeper,
        state,
        generations,
        backlog,
        stall_timeout=settings.stall_timeout,
        follow_generations=settings.follow_generations,
    )
    for processor in (dead_letters, tracking, ingest, feed, sweeper, lifecycle):
        processor.init(context)
    status = WorkerStatus(context, indexes, sweeper, progress, str(app.conf.canonical_url))
    tracker = TrackerApp(
        app,
        settings,
        catalog,
        topics,
        tables,
        indexes,
        metrics,
        context,
        checkpoint,
        state,
        ingest,
        feed,
        tracking,
        sweeper,
        progress,
        generations,
        status,
    )
    metrics.registry.register(StateCollector(lambda: gauges(tracker, census)))
    _agents(tracker)
    batches = Batches(bootstrap, settings.batches)
    api = views.Api(
        app, settings, catalog, tables.sagas, indexes, metrics, status, topics.saga_log, batches, conformance, state=state.get
    )
    views.register(app, api, generations)
    return tracker


def gauges(t: TrackerApp, census: Census) -> dict[str, Any]:
    """What the state gauges show, from memory and a seek per step: no table scan."""
    t.indexes.place()  # the sagas changed since the last read, counted in
    in_flight = census.total()
    stuck: Counter[tuple[str, str]] = Counter(t.sweeper.due)
    for (saga_type, status, step), n in in_flight.items():
        if status == FAILED_NEEDS_MANUAL:
            stuck[(saga_type, step)] += n
    now = time.time()
    oldest: dict[tuple[str, str], float] = {}
    for partition in t.context.active_partitions():
        index = t.indexes.cached(partition)
        if index is None:
            continue
        for d in t.catalog.current.values():
            for spec in d.steps:
                since = index.oldest_pending(pending_prefix(d.name, spec.name))
                if since is not None:
                    oldest[(d.name, spec.name)] = max(oldest.get((d.name, spec.name), 0.0), now - since)
    return {
        "in_flight": in_flight,
        "stuck": stuck,
        "oldest": oldest,
        "ready": t.status.ready(),
        "recovering": t.context.in_recovery(),
        "remaining": t.context.recovery_remaining(),
    }


def _agents(t: TrackerApp) -> None:
    """The feed reads the services' topics (and decisions); one faust agent reads the saga log.
    Each record's offset is reported to catch-up."""

    @t.app.task
    async def feed() -> None:
        consumer = clients.consumer(
            t.progress.bootstrap,
            purpose="feed",
            # An offset the broker no longer has (retention) resets as faust's consumer would:
            # aiokafka's own default ("latest") would skip every record still there.
            auto_offset_reset=str(t.app.conf.consumer_auto_offset_reset),
            fetch_max_bytes=t.settings.fetch_max_bytes,
            max_partition_fetch_bytes=t.settings.fetch_max_bytes,
        )
        try:
            await consumer.start()
        except Exception as exc:  # as faust's own consumer failing to start: nothing would read the input
            exit_to_restart(f"the feed's consumer did not start: {exc!r}")
        try:
            await t.feed.run(consumer)
        finally:
            await consumer.stop()

    def agent(topic: faust.TopicT, name: str, process: Callable[[Record], Awaitable[Any]]) -> None:
        async def consume(stream: Any) -> None:
            async for event in stream.events():
                message = event.message
                try:
                    await process(records.from_message(message))  # failures are dead-lettered inside
                except Exception as exc:
                    # A processor that raises is a bug; faust would acknowledge the record and
                    # restart the agent (its offset then committed past it). Never acknowledged:
                    # the restarted worker reads it again.
                    exit_to_restart(f"{name} failed on {message.topic}/{message.partition}/{message.offset}: {exc!r}")
                t.progress.processed(message.tp, message.offset)

        # Concurrency 1: faust may commit past an in-flight message otherwise (#606).
        t.app.agent(topic, name=f"{t.settings.group_id}-{name}", concurrency=1)(consume)

    # faust still subscribes the sources (its assignor places their partitions with the saga
    # state's, its member commits them) but never fetches them (``internals.keep_paused``): no
    # record reaches this agent.
    agent(t.topics.sources, "ingest", t.ingest.process)
    agent(t.topics.saga_log, "track", t.tracking.process)
