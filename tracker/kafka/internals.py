"""Every reach into faust and aiokafka internals, in one place.

faust-streaming 0.15.3 and aiokafka 0.14.0 have no public API for what follows. Each reach
says why it exists and names the test that fails without it; ``import-linter`` and
``tests/unit/test_boundaries.py`` keep every other module off private faust/aiokafka names.
All of them are client-side behaviour and hold on Apache Kafka as on the embedded broker.

Each reach, why, and the test that fails without it:

- ``ProducerBuffer._send_pending`` and ``ProducerBuffer.flush``: a commit waits for every record
  handed to faust's producer buffer. ``tests/integration/test_internals.py::
  test_a_commit_waits_for_a_record_in_hand``.
- ``AIOKafkaProducer.__init__`` (``client.add_topic``, ``client._topics``): a producer keeps every
  topic's metadata when it starts sending to a new one. ``test_internals.py::
  test_a_producer_keeps_the_metadata_of_known_topics_when_it_sends_to_a_new_one``.
- ``AIOKafkaConsumerThread.seek_to_committed``: partitions committed at 0 or never are rewound
  after a rebalance. ``test_internals.py::test_seeking_to_committed_rewinds_partitions_committed_at_zero_or_never``.
- ``AIOKafkaConsumerThread.verify_event_path`` and ``consumer._fetcher._subscriptions``: faust's
  livelock check skips a partition not positioned yet instead of crashing the worker.
  ``test_internals.py::test_the_livelock_check_skips_a_partition_not_positioned_yet``.
- ``Producer._ensure_producer`` (faust's aiokafka driver): the aiokafka producer behind faust's,
  to hand it records as whole batches (``tracker.kafka.outgoing``: aiokafka's public
  ``create_batch``/``send_batch``, which faust does not pass on).
  ``tests/integration/test_outgoing.py`` (every test sends through it).
- ``app.producer.flush`` (this app's instance): the checkpoint runs where faust's commit flushes
  the producer. ``tests/agents/test_checkpoint.py::test_faust_s_commit_runs_the_checkpoint_first``.
- ``table.data._dbs``: one partition's RocksDB, and every one open here to flush their memtables
  at a clean stop (faust has no per-partition API).
  ``tests/agents/test_state_cache.py`` (every test writes through it).
- ``table.apply_changelog_batch``: the local indexes learn which partitions recovery or a standby
  changed. ``tests/agents/test_agents.py::test_changelog_batches_name_their_partitions_before_they_are_applied``.
- ``recovery._build_offsets``: the batch restore runs once faust knows where each store and
  changelog stand. ``tests/integration/test_restore.py``.
- ``assignor._tps_url`` and ``router._route_req``: which worker owns a partition, and forwarding a
  request to it. ``tests/integration/test_api.py`` (reads from every worker).
- ``consumer._client.force_metadata_update``: replay sees a topic created after its consumer
  started. ``tests/integration/test_replay.py``.
- ``consumer.pause_partitions``/``resume_partitions`` (this app's instance) and aiokafka's
  ``pause`` on faust's consumer: faust never fetches the partitions the feed reads.
  ``tests/integration/test_feed.py::test_faust_never_fetches_the_feed_s_partitions``.
- ``consumer.wait_empty`` (this app's instance): the feed finishes its record in hand and runs the
  checkpoint where faust waits for its streams, before it commits and closes the stores.
  ``tests/integration/test_feed.py::test_faust_s_wait_for_empty_streams_finishes_the_feed``.
- ``consumer._commit``: the feed's offsets are committed through faust's group member, fenced
  by its generation (the fault harness's SIGSTOP scenario wakes a member whose generation is
  over). ``tests/integration/test_feed.py::test_a_worker_commits_what_its_feed_applied``.
- ``Worker._schedule_shutdown`` (mode's): a stop on SIGTERM/SIGINT is bounded by a timer.
  ``tests/integration/test_processes.py::test_a_worker_whose_broker_is_gone_stops_within_its_bound``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from faust.stores.rocksdb import Store as RocksDBStore
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.producer import ProducerBuffer
from faust.types import TP, AppT, TableT

from tracker.kafka import clients

log = logging.getLogger(__name__)
FLUSH_BOUND = 10.0  # seconds a commit waits for faust's producer buffer to drain


STORE_OFFSET_KEY = RocksDBStore.offset_key  # where faust records how far a partition's store has its changelog
_installed: set[str] = set()  # the class-level fixes installed in this process (no markers on faust's classes)


@dataclass
class BufferActivity:
    """What the producer watchdog needs to know of faust's producer buffer."""

    in_hand: int = 0  # records taken from the buffer and not yet handed to aiokafka
    moved: float = field(default_factory=time.monotonic)  # when a record last left the buffer


_activity: weakref.WeakKeyDictionary[Any, BufferActivity] = weakref.WeakKeyDictionary()


def activity(buffer: Any) -> BufferActivity:
    found = _activity.get(buffer)
    if found is None:
        found = _activity[buffer] = BufferActivity()
    return found


def install_client_fixes() -> None:
    """Install the class-level fixes below, once per process, before the faust app is built."""
    for fix in (make_commits_durable, keep_producer_metadata, rewind_uncommitted_partitions, guard_livelock_check):
        if fix.__name__ not in _installed:
            fix()
            _installed.add(fix.__name__)


def make_commits_durable() -> None:
    """Commit an input offset only once every record produced before it is delivered.

    faust commits after flushing its producer buffer, but ``ProducerBuffer.flush`` gives up
    as soon as no message went out for 0.1 s, and does not see the message being handed to
    aiokafka at that moment. A changelog record still in the buffer is then lost by a crash
    although the input offset that produced it is committed, and the saga's state regresses
    on recovery (found by the fault harness: SIGKILL, os._exit, SIGSTOP). This flush waits
    until the buffer is empty and nothing is in hand (bounded, see below); aiokafka's own
    flush, which faust awaits next, then waits for delivery.
    """
    send = ProducerBuffer._send_pending

    async def _send_pending(self: Any, fut: Any) -> None:
        seen = activity(self)
        seen.in_hand += 1
        try:
            await send(self, fut)
        finally:
            seen.in_hand -= 1
            seen.moved = time.monotonic()

    async def flush(self: Any) -> None:
        # Bounded: while a rebalance waits on this commit, faust may not hand the buffer to
        # aiokafka at all, so waiting forever would deadlock it. After FLUSH_BOUND the commit
        # goes ahead as faust's would (logged); a broker that takes nothing for longer is
        # handled by the producer watchdog, which exits the worker.
        deadline = time.monotonic() + FLUSH_BOUND
        while self.size or activity(self).in_hand:
            if time.monotonic() > deadline:
                log.warning("producer buffer not drained after %gs (%d waiting): committing", FLUSH_BOUND, self.size)
                return
            self.message_sent.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.message_sent.wait(), timeout=0.5)

    ProducerBuffer._send_pending = _send_pending  # type: ignore[method-assign]
    ProducerBuffer.flush = flush  # type: ignore[method-assign]


def keep_producer_metadata() -> None:
    """Keep every topic's metadata when a producer starts tracking one more topic.

    An aiokafka client whose set of tracked topics is empty fetches metadata for *all*
    topics. A producer's first send to a topic missing from that snapshot (one created after
    it started: an output topic, a changelog) calls ``add_topic``, which turns "all" into just
    that topic; the next refresh drops every other topic's partitions, their queued batches
    have no leader and wait forever, and faust's producer buffer, sending one record at a
    time, stalls behind them: no changelog write, no commit (seen in CI as a changelog stuck
    behind the table for minutes). Seeding the set with the topics already known keeps "all
    known + the new one". Producers only: a pattern-subscribed consumer relies on "all" to
    see new topics, and its coordinator manages the set itself.
    """
    init = AIOKafkaProducer.__init__

    def producer_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        client, add_topic = self.client, self.client.add_topic

        def add(topic: str) -> Any:
            if not client._topics:
                client._topics.update(client.cluster.topics())
            return add_topic(topic)

        client.add_topic = add

    AIOKafkaProducer.__init__ = producer_init  # type: ignore[method-assign]


def rewind_uncommitted_partitions() -> None:
    """Seek *every* input partition back to where the group stands after a rebalance.

    faust drops records it fetched but did not deliver while partitions are reassigned or
    recovered (records of a paused partition, queues cleared, a getmany cut short by a new
    generation) and relies on seeking to the committed offsets afterwards. aiokafka's
    ``seek_to_committed`` skips a partition whose committed offset is 0 or missing, so
    such a partition stays past records nobody processed: never forwarded, never tracked
    (found by the fault harness, SIGKILL every 4 s: completions lost, their steps timed out
    and compensated). Those partitions now go to offset 0, or to the reset policy's end
    when nothing was ever committed. Changelog partitions are left to faust's recovery.
    """

    async def seek_to_committed(self: Any) -> Mapping[TopicPartition, int | None]:
        consumer = self._ensure_consumer()
        changelogs = set(self.app.tables.changelog_topics)
        reset = str(self.app.conf.consumer_auto_offset_reset)
        return await self.call_thread(seek_all_to_committed, consumer, changelogs, reset)  # type: ignore[no-any-return]

    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed  # type: ignore[method-assign,assignment]


async def seek_all_to_committed(
    consumer: AIOKafkaConsumer, skip_topics: Collection[str] = (), reset: str = "earliest"
) -> dict[TopicPartition, int | None]:
    """``consumer.seek_to_committed()``, and also seek the partitions it leaves alone: those
    committed at 0 to 0, those never committed by the reset policy."""
    committed: dict[TopicPartition, int | None] = await consumer.seek_to_committed()
    never = []
    for tp, offset in committed.items():
        if tp.topic in skip_topics:
            continue
        if offset == 0:
            consumer.seek(tp, 0)
        elif offset is None or offset < 0:
            never.append(tp)
    await clients.seek_to_reset(consumer, never, reset)
    return committed


def guard_livelock_check() -> None:
    """Let faust's livelock detector skip a partition aiokafka has not positioned yet.

    Every few seconds faust checks that each assigned partition is still fetched and
    processed, reading its position from aiokafka; right after a rebalance a partition is
    assigned but still being seeked (no position yet), aiokafka's ``position`` asserts, and
    the exception ends faust's timer and the worker with it (exit 1, seen once in a SIGKILL
    fault run). Such a partition has nothing to verify yet; the next check covers it.
    """
    verify = AIOKafkaConsumerThread.verify_event_path

    def verify_event_path(self: Any, now: float, tp: Any) -> None:
        if not positioned(self._ensure_consumer(), TopicPartition(tp.topic, tp.partition)):
            return None
        return verify(self, now, tp)

    AIOKafkaConsumerThread.verify_event_path = verify_event_path  # type: ignore[method-assign]


def _partition_state(consumer: AIOKafkaConsumer | None, tp: TopicPartition) -> Any | None:
    """aiokafka's state of ``tp`` in ``consumer``'s assignment; None if not assigned there."""
    subscription = consumer._fetcher._subscriptions.subscription if consumer is not None else None
    assignment = subscription.assignment if subscription is not None else None
    return assignment.state_value(tp) if assignment is not None else None


def positioned(consumer: AIOKafkaConsumer, tp: TopicPartition) -> bool:
    """The consumer has ``tp`` assigned, fetches it (the feed's partitions are paused: nothing to
    verify there) and knows where it reads next."""
    state = _partition_state(consumer, tp)
    return state is not None and not state.paused and bool(state.has_valid_position)


# --- the feed's partitions: never fetched by faust, committed through its group member ----------


def keep_paused(app: AppT, topics: Collection[str]) -> None:
    """Keep faust's consumer from ever fetching the partitions of ``topics`` (``tracker.stream.feed``
    reads them).

    faust pauses every partition of a new assignment and resumes the active ones once their
    tables are recovered; it cannot leave some of them to another reader. On this app's consumer
    instance: its pause also pauses these in aiokafka, whose fetcher would otherwise prefetch a
    batch of each and hold it (faust's own pause only stops handing records out), and its resume
    leaves them out. Still subscribed, so faust's assignor assigns them with the saga state's
    partitions and its group member can commit them.
    """
    consumer: Any = app.consumer
    if not hasattr(consumer, "_thread"):  # not the aiokafka driver (agent tests' memory transport)
        return
    pause, resume, mine = consumer.pause_partitions, consumer.resume_partitions, frozenset(topics)

    def pausing(tps: Iterable[TP]) -> None:
        tps = set(tps)
        pause(tps)
        client = consumer._thread._consumer
        for tp in tps:
            if tp.topic in mine and client is not None:
                # From faust's rebalance, while its consumer thread waits on it. A partition the
                # new assignment no longer has is not this one's to pause.
                with contextlib.suppress(Exception):
                    client.pause(TopicPartition(tp.topic, tp.partition))

    def resuming(tps: Iterable[TP]) -> None:
        resume({tp for tp in tps if tp.topic not in mine})

    consumer.pause_partitions, consumer.resume_partitions = pausing, resuming


def fetching(app: AppT, tp: TP) -> bool:
    """faust's consumer fetches ``tp`` (assigned, not paused in aiokafka)."""
    state = _partition_state(app.consumer._thread._consumer, TopicPartition(tp.topic, tp.partition))  # type: ignore[attr-defined]
    return state is not None and not state.paused


def after_wait_empty(app: AppT, finish: Callable[[], Awaitable[None]]) -> None:
    """Run ``finish`` (the feed's) where faust waits for its streams to be empty.

    faust calls ``consumer.wait_empty`` when a revocation begins and when the worker stops, after
    suspending its flow and before it flushes the producer (the checkpoint), commits, and (on a
    stop) closes the tables' stores: the one point where every in-flight record must be done and
    the stores are still open. faust counts only its own streams' records there. On this app's
    consumer instance."""
    consumer: Any = app.consumer
    wait_empty = consumer.wait_empty

    async def waiting() -> None:
        await wait_empty()
        await finish()

    consumer.wait_empty = waiting


async def commit_offsets(app: AppT, offsets: Mapping[TP, int]) -> bool:
    """Commit ``offsets`` through faust's group member: fenced by its generation, so after a
    rebalance took the partitions away the broker refuses (False). faust's public commit only
    commits what its own streams acknowledged; this is the call it makes with those."""
    consumer: Any = app.consumer
    return bool(await consumer._commit(dict(offsets)))


# --- the producer buffer, for the watchdog and the checkpoint ----------------------------------


def producer_waiting(app: AppT) -> int:
    """Records in faust's producer buffer, or taken from it and not yet handed to aiokafka."""
    buffer: Any = app.producer.buffer
    return int(buffer.size) + activity(buffer).in_hand


def producer_moved(app: AppT) -> float:
    """When a record last left faust's producer buffer (monotonic seconds)."""
    return activity(app.producer.buffer).moved


def producer_idle(app: AppT) -> None:
    """Nothing waits in the buffer now: the watchdog's clock restarts from here."""
    activity(app.producer.buffer).moved = time.monotonic()


def aiokafka_producer(producer: Any) -> AIOKafkaProducer:
    """The aiokafka producer of faust's (started) producer."""
    return producer._ensure_producer()  # type: ignore[no-any-return]


def before_commit(app: AppT, commit: Callable[[Callable[[], Awaitable[None]]], Awaitable[None]]) -> None:
    """Make every producer flush of this app go through ``commit(flush)`` (the checkpoint).

    faust has no commit hook: its commit (``Consumer._commit_offsets``) and its revocation await
    ``app.producer.flush()`` before any input offset is committed, so the checkpoint runs there
    and flushes the producer itself, as its third step (``tracker.stream.checkpoint``). Replaced
    on this app's producer instance only."""
    producer: Any = app.producer
    flush = producer.flush

    async def checkpoint() -> None:
        await commit(flush)

    producer.flush = checkpoint


# --- tables: one partition's store, and changelog batches faust applies ------------------------


def partition_store(table: TableT, partition: int) -> Any | None:
    """One partition's open RocksDB; None if not open here or not a RocksDB store."""
    dbs = getattr(table.data, "_dbs", None)
    return None if dbs is None else dbs.get(partition)


def open_stores(table: TableT) -> list[Any]:
    """Every partition store of ``table`` open here (none for the memory store)."""
    return list(getattr(table.data, "_dbs", {}).values())


def partition_items(table: TableT, partition: int, start: bytes = b"") -> Iterable[tuple[bytes, bytes]] | None:
    """One partition's (key, value) rows in key order from ``start``; None if not open here.

    The memory store (agent tests) keeps no partitions: it answers with all its rows.
    """
    store: Any = table.data
    if not hasattr(store, "_dbs"):
        return sorted((k, v) for k, v in store.data.items() if k >= start)
    db = partition_store(table, partition)
    return None if db is None else db.items(from_key=start)


def on_changelog_applied(table: TableT, callback: Callable[[set[int]], None]) -> None:
    """Call ``callback`` with the partitions whose state faust is about to change from the
    changelog (recovery, standby): every write to a table that is not the tracker's own."""
    apply: Any = table.apply_changelog_batch

    def applying(batch: Any) -> None:
        batch = list(batch)
        callback({event.message.partition for event in batch})
        apply(batch)

    table.apply_changelog_batch = applying  # type: ignore[method-assign]


Restore = Callable[[set[TP], Any, Mapping[TP, int | None], Callable[[], bool]], Awaitable[Any]]


def after_active_offsets(app: AppT, restore: Restore) -> None:
    """Run ``restore(tps, offsets, highwaters, stop)`` once faust's recovery has read where each
    active partition's store stands and where its changelog ends, before its own record-by-record
    recovery starts (``tracker.stream.restore``)."""
    recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
    build_offsets = recovery._build_offsets

    async def _build_offsets(consumer: Any, tps: Any, destination: Any, title: str) -> None:
        await build_offsets(consumer, tps, destination, title)
        if title == "active":
            await restore(set(tps), destination, recovery.active_highwaters, recovery.signal_recovery_start.is_set)

    recovery._build_offsets = _build_offsets


# --- the assignment: which worker owns what ----------------------------------------------------


def worker_urls(app: AppT) -> Mapping[TP, Any]:
    """Every assigned partition's worker URL, from the assignment all workers share."""
    assignor: Any = app.assignor
    urls: Mapping[TP, Any] = assignor._tps_url
    return urls


async def route_request(app: AppT, url: Any, view: Any, request: Any) -> Any:
    """Forward ``request`` to the worker at ``url`` (raises faust's ``SameNode`` for this one)."""
    router: Any = app.router
    return await router._route_req(url, view.web, request)


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Fetch metadata now: a topic created after the consumer started is otherwise unknown
    to it until the next periodic refresh."""
    await consumer._client.force_metadata_update()


# --- the worker process: a bounded stop -------------------------------------------------------


LIFECYCLE = re.compile(
    r"^\[\^.*?\]: (Starting|Stopping|Stopped|Started|Restarting|Waiting for|Creating topic|Topic '.*' created|"
    r"Highwater for|active offsets at|standby offsets at|Resuming flow|Seek stream partitions|Wait for streams|"
    r"Flush producer buffer)|^(Subscribed to topic|Setting newly assigned partitions|Revoking previously assigned|"
    r"opening partition|generation id|Executing _on_partitions)"
)


def quiet_lifecycle(record: logging.LogRecord) -> bool:
    """Drop faust's and mode's lifecycle lines logged below WARNING."""
    return record.levelno >= logging.WARNING or not LIFECYCLE.match(record.getMessage())


class BoundedStopWorker(faust.Worker):  # type: ignore[misc]
    """faust's worker, whose stop on SIGTERM/SIGINT is bounded.

    mode's worker stops on a signal by awaiting every service's stop, which waits for the
    consumer's final commit and the producer's flush: with the broker gone that never ends (an
    orphaned demo worker kept running for minutes). ``_schedule_shutdown`` (mode's, private) is
    where a signal starts the stop; from there a timer gives the stop ``stop_timeout`` seconds, then
    logs one line saying what it could not finish and exits 1. A stop that finishes in time exits
    0 as before. ``tests/integration/test_processes.py::test_a_worker_whose_broker_is_gone_stops_within_its_bound``.
    """

    def __init__(self, *args: Any, stop_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop_timeout = stop_timeout
        self._stop_timer: threading.Timer | None = None

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """faust's and mode's lifecycle lines (every service's Starting.../Stopping..., the
        subscription and offset tables) go out only at DEBUG: at INFO they buried the worker's
        own lines. mode's public hook, called once faust has configured the root logger."""
        super().on_setup_root_logger(logger, level)
        if level > logging.DEBUG:
            for handler in logger.handlers:
                handler.addFilter(quiet_lifecycle)

    def _schedule_shutdown(self, signal: Any) -> None:
        if self._stop_timer is None and self.stop_timeout > 0:
            self._stop_timer = threading.Timer(
                self.stop_timeout, self._stop_overdue, args=(getattr(signal, "name", str(signal)),)
            )
            self._stop_timer.daemon = True
            self._stop_timer.start()
        super()._schedule_shutdown(signal)

    def _stop_overdue(self, signal: str) -> None:
        app: Any = self.app
        try:
            waiting = producer_waiting(app)
        except Exception:  # a producer never started: nothing of it to count
            waiting = 0
        log.error(
            "stop on %s did not finish within %gs (broker unreachable?): %d records not flushed, "
            "offsets not committed; exiting 1",
            signal,
            self.stop_timeout,
            waiting,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)
