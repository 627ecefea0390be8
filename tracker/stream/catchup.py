"""Is this worker behind on its input? If so it fires no timeouts.

A deadline can look due only because its completion is still in a backlog: after a
restart, a rebalance, a recovery or a replay. So after every revoke and every assignment
(even of the partitions it had: a paused worker gets them back with a backlog) a worker goes
through catch-up, and fires nothing until it is done:

1. ``sources``: on *every* partition of the services' topics, the offsets processed reach
   the end offsets read when catch-up began: exactly on this worker's own partitions, within
   ``lag_threshold`` on the others (judged by the group's committed offsets, which trail
   what their owner processed; stream time, below, covers what may wait there);
2. ``log``: then, with the producer flushed so every forwarded event is in the log, the
   end offsets of this worker's own saga-log partitions are read, and it applies records
   up to them (never judged by the consumer's position, which runs ahead of what the
   agent applied).

After that (``live``), a worker is behind while any input partition, of the whole group
for service topics or of its own for the saga log, has more than ``lag_threshold``
records not yet processed (committed, for other workers' partitions), or has unprocessed
records and a position that has not moved for ``2 x commit interval`` (at least 5 s): its
owner died or hangs, and a completion may sit in it until the group rebalances (found by
the fault harness: a few records of a killed worker's partition, under the threshold,
held the completion of a step that then timed out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from faust.types import TP

from tracker.kafka import clients

log = logging.getLogger(__name__)

SOURCES, LOG, LIVE = "sources", "log", "live"
PEEK_BUDGET = 1.0  # seconds a measurement may spend peeking at waiting records


class Progress:
    def __init__(
        self,
        app: Any,
        source_topics: Iterable[str],
        saga_log: str,
        bootstrap: str,
        lag_threshold: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app, self.saga_log, self.bootstrap, self.clock = app, saga_log, bootstrap, clock
        self.still: dict[TP, tuple[int, float]] = {}  # partition -> (position, since when) while lagging
        self.wedged: list[TP] = []  # this worker's own partitions that stopped moving (see sweeper)
        self.wedged_after = 0.0  # seconds (Settings.stall_timeout); 0: never
        self.peeked: dict[TP, tuple[int, float | None]] = {}  # partition -> (offset, first record's timestamp)
        self.watermark: float | None = None  # timestamp of the oldest record not yet processed
        self._peek: AIOKafkaConsumer | None = None
        self.stalled_after = max(5.0, 2 * float(getattr(app.conf, "broker_commit_interval", 2.8)))
        self.source_topics = tuple(source_topics)
        self.counts: dict[str, int] | None = None  # partitions per source topic, this rebalance
        self.lag_threshold = lag_threshold
        self.next_offset: dict[TP, int] = {}  # next offset to process, per partition, this worker
        self.phase = SOURCES
        self.why = ""  # what the last measurement found this worker behind on
        self.epoch = 0  # bumped by every rebalance
        self.assignment: frozenset[TP] = frozenset()
        self.targets: dict[TP, int] = {}
        self.lags: dict[TP, int] = {}  # last measured, for metrics and the read model
        self._admin: AIOKafkaAdminClient | None = None
        # Offsets come from a client of their own: on the worker's consumer connection a
        # ListOffsets request waits behind the in-flight long-poll fetch (0.5 s each).
        self._offsets: AIOKafkaConsumer | None = None

    def processed(self, tp: TP, offset: int) -> None:
        self.next_offset[tp] = offset + 1

    def revoked(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self.next_offset.pop(tp, None)
        self.restart()

    def restart(self) -> None:
        """A rebalance (revoke, and again on assignment) starts a new catch-up, even when the
        worker gets back the very partitions it had: a paused worker (zombie) that wakes up
        does, with a backlog behind them. ``epoch`` tells a measurement begun before it."""
        self.epoch += 1
        self.phase, self.targets, self.assignment = SOURCES, {}, frozenset()
        self.counts = None  # partitions may have been added: count again
        # A partition that did not move under its old owner gets a fresh window with the new
        # one: kept, it looked wedged the moment it arrived and the worker exited at once.
        self.still.clear()

    async def close(self) -> None:
        admin, offsets, peek = self._admin, self._offsets, self._peek
        # Dropped first: after a stalled request a client can stay wedged, and the next
        # measurement must start from fresh connections whatever closing them does.
        self._admin = self._offsets = self._peek = None
        if peek is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(peek.stop(), timeout=2)
        if admin is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(admin.close(), timeout=2)
        if offsets is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(offsets.stop(), timeout=2)

    async def end_offsets(self, tps: list[TP]) -> dict[TP, int]:
        return await self._list_offsets(tps, end=True)

    async def earliest_offsets(self, tps: list[TP]) -> dict[TP, int]:
        return await self._list_offsets(tps, end=False)

    async def _list_offsets(self, tps: list[TP], *, end: bool) -> dict[TP, int]:
        if not tps:
            return {}
        if self._offsets is None:
            client = clients.consumer(self.bootstrap, purpose="catchup", enable_auto_commit=False, request_timeout_ms=5000)
            await client.start()
            self._offsets = client
        parts = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        found = await (self._offsets.end_offsets(parts) if end else self._offsets.beginning_offsets(parts))
        return {TP(tp.topic, tp.partition): int(offset) for tp, offset in found.items()}

    async def admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = clients.admin(self.bootstrap, purpose="catchup", request_timeout_ms=5000)
            await admin.start()
            self._admin = admin
        return self._admin

    async def source_partitions(self) -> list[TP]:
        """Every partition of the services' topics (and decisions), counted by the broker once
        per rebalance. Not from faust's ``consumer.topic_partitions``: that is aiokafka's
        metadata snapshot of the group's subscription, which only the group's leader fills;
        on every other worker it knows no topic, and catch-up then ignored every service
        topic (found by the fault harness: a timeout fired while a failure event waited)."""
        if self.counts is None:
            known = await self.describe()
            self.counts = {topic: known.get(topic, 0) for topic in self.source_topics}  # 0: no such topic yet
        return [TP(topic, p) for topic in self.source_topics for p in range(self.counts[topic])]

    async def describe(self) -> dict[str, int]:
        """Partitions per topic, of every topic the broker has (no request that names one,
        which a broker may answer by creating it)."""
        admin = await self.admin()
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics() if t["error_code"] == 0}

    def partitions(self, topic: str) -> int | None:
        """The partition count of a source topic as of this rebalance; None until measured."""
        return None if self.counts is None else self.counts.get(topic)

    async def committed(self, tps: list[TP]) -> dict[TP, int | None]:
        """The group's committed offset per partition; None where it never committed one."""
        if not tps:
            return {}
        admin = await self.admin()
        found = await admin.list_consumer_group_offsets(
            self.app.conf.id, partitions=[TopicPartition(tp.topic, tp.partition) for tp in tps]
        )
        out: dict[TP, int | None] = {}
        for tp in tps:
            meta = found.get(TopicPartition(tp.topic, tp.partition))
            out[tp] = meta.offset if meta is not None and meta.offset >= 0 else None
        return out

    async def group_positions(self, tps: list[TP]) -> dict[TP, int]:
        """Next offset the group will process, per partition (local progress wins)."""
        committed = await self.committed(tps)
        out = {tp: offset for tp, offset in committed.items() if offset is not None}
        unknown = [tp for tp, offset in committed.items() if offset is None]
        if unknown:  # nothing committed yet: the group starts from the earliest offset
            earliest = await self.earliest_offsets(unknown)
            out.update({tp: earliest.get(tp, 0) for tp in unknown})
        for tp in tps:
            if tp in self.next_offset:
                out[tp] = max(out[tp], self.next_offset[tp])
        return out

    async def own_log_partitions(self) -> list[TP]:
        return sorted(tp for tp in self.app.consumer.assignment() if tp.topic == self.saga_log)

    async def behind(self) -> bool:
        """Measure and decide; raises on broker errors (the caller then fires nothing)."""
        assignment = frozenset(self.app.consumer.assignment())
        if assignment != self.assignment:
            self.assignment, self.phase, self.targets = assignment, SOURCES, {}
        sources = await self.source_partitions()
        own_log = await self.own_log_partitions()
        highwaters = await self.end_offsets([*sources, *own_log])
        # Committed offsets, or this worker's own progress where it is further. Never the
        # consumer's position: that counts records handed to faust's stream buffer, not applied.
        positions = await self.group_positions([*sources, *own_log])
        self.lags = {tp: max(0, highwaters.get(tp, 0) - positions[tp]) for tp in positions}
        # Stream time: no deadline fires past the oldest record still waiting anywhere in the
        # input (a completion may be in it). Lagging partitions are peeked, once per position.
        waiting = await self.first_timestamps({tp: positions[tp] for tp, lag in self.lags.items() if lag > 0})
        self.watermark = min((ts for ts in waiting.values() if ts is not None), default=None)
        stalled = [tp for tp in self.stalled(positions) if waiting.get(tp) is not None]
        self.wedged = [
            tp
            for tp in stalled
            if self.wedged_after and tp in assignment and self.clock() - self.still[tp][1] > self.wedged_after
        ]
        if self.phase == SOURCES:
            if not self.targets:
                self.targets = {tp: highwaters.get(tp, 0) for tp in sources}
            # This worker's own partitions exactly; another worker's within the lag threshold,
            # as once live: its committed offset can trail what it has processed (commits are
            # periodic, and a broker may refuse a member's commits for a while), and stream
            # time still holds back every deadline past a record waiting there.
            slack = {tp: 0 if tp in assignment else self.lag_threshold for tp in self.targets}
            short_of = {tp: (positions[tp], t) for tp, t in self.targets.items() if positions[tp] + slack[tp] < t}
            self.why = short(SOURCES, short_of)
            if not short_of:
                await self.app.producer.flush()  # every forwarded event is now in the saga log
                fresh = await self.end_offsets(own_log)
                self.targets = {tp: fresh.get(tp, 0) for tp in own_log}
                self.phase = LOG
        if self.phase == LOG:
            # Measured before the flush above: on the sweep that ends ``sources`` this
            # waits one more sweep at most.
            short_of = {tp: (positions[tp], t) for tp, t in self.targets.items() if positions[tp] < t}
            self.why = short(LOG, short_of)
            if not short_of:
                self.phase = LIVE
                log.info("caught up on input: timeouts enabled")
        if self.phase != LIVE:
            return True
        lagging = {tp: (positions[tp], positions[tp] + lag) for tp, lag in self.lags.items() if lag > self.lag_threshold}
        ends = {tp: (positions[tp], positions[tp] + self.lags.get(tp, 0)) for tp in stalled}
        self.why = short("lag", lagging) if lagging else short("stalled", ends)
        return bool(lagging) or bool(stalled)

    async def first_timestamps(self, wanted: dict[TP, int]) -> dict[TP, float | None]:
        """Timestamp (seconds) of the first record at or after each offset, peeked all at once
        within ``PEEK_BUDGET``. None: the broker answered that there is no record there (a
        phantom lag: transaction markers), remembered until the position moves. No answer in
        time (a slow fetch, a busy broker, an empty answer below the high watermark) is 0.0
        for this sweep only: a record we could not see may be a completion, so nothing fires
        past it."""
        out: dict[TP, float | None] = {}
        todo: dict[TopicPartition, tuple[TP, int]] = {}
        for tp, offset in wanted.items():
            known = self.peeked.get(tp)
            if known is not None and known[0] == offset:
                out[tp] = known[1]
            else:
                todo[TopicPartition(tp.topic, tp.partition)] = (tp, offset)
        if not todo:
            return out
        if self._peek is None:
            # Only each partition's first record is wanted: a small fetch, not faust-sized ones
            # (1 MB per partition by default, a few per sweep while the worker is busy).
            # A batch bigger than this still comes whole (the broker returns at least one).
            peek = clients.consumer(
                self.bootstrap,
                purpose="catchup",
                enable_auto_commit=False,
                request_timeout_ms=5000,
                max_partition_fetch_bytes=64 * 1024,
            )
            await peek.start()
            self._peek = peek
        self._peek.assign(list(todo))
        for part, (_, offset) in todo.items():
            self._peek.seek(part, offset)
        deadline = time.monotonic() + PEEK_BUDGET
        while todo and time.monotonic() < deadline:
            # One record: aiokafka decodes a fetched partition's records as they are taken, and
            # a busy worker's sweep would otherwise decode every record of each 64 KiB fetch
            # (a tenth of the worker's CPU while it catches up, py-spy in bench/README.md).
            batch = await self._peek.getmany(*todo, timeout_ms=200, max_records=1)
            for part, records in batch.items():
                if part in todo and records:
                    tp, offset = todo.pop(part)
                    ts = records[0].timestamp
                    out[tp] = ts / 1000 if ts and ts > 0 else 0.0  # no timestamp: assume it is old
                    self.peeked[tp] = (offset, out[tp])
        for part, (tp, offset) in todo.items():
            answered = self._peek.last_poll_timestamp(part) is not None
            highwater = self._peek.highwater(part)
            # Nothing there only if the broker said so: its answer's high watermark is at or
            # below where the fetch got to (past transaction markers, if any). An empty answer
            # below the high watermark (seen on the embedded broker) is no answer.
            if answered and (highwater is None or await self._peek.position(part) >= highwater):
                out[tp] = None
                self.peeked[tp] = (offset, None)
            else:
                out[tp] = 0.0
        return out

    def stalled(self, positions: dict[TP, int]) -> list[TP]:
        """Partitions with unprocessed records whose position has not moved for a while."""
        now, out = self.clock(), []
        for tp, position in positions.items():
            if self.lags.get(tp, 0) == 0:
                self.still.pop(tp, None)
                continue
            seen = self.still.get(tp)
            if seen is None or seen[0] != position:
                self.still[tp] = (position, now)
            elif now - seen[1] > self.stalled_after:
                out.append(tp)
        return out


def short(what: str, offsets: dict[TP, tuple[int, int]]) -> str:
    """``what``: a few partitions as ``topic/partition position/end``, for the log."""
    shown = [f"{tp.topic}/{tp.partition} {at}/{target}" for tp, (at, target) in sorted(offsets.items())[:3]]
    more = f" (+{len(offsets) - 3} more)" if len(offsets) > 3 else ""
    return f"{what}: {', '.join(shown)}{more}" if shown else ""
