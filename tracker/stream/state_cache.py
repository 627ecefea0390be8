"""State cache: a saga's state row, cached between commits, then written to its partition's
store and the table's changelog.

faust's table write (``table[key] = value``) hands the changelog record to faust's producer
buffer one record at a time through a queue, a task, a future chain and two callbacks, and
the row through faust's codecs and key index (bench/README.md has the measured cost). This
does what faust's write does (the row, its changelog record on the same partition, the
persisted offset once the record is delivered) without that machinery, and records that
offset only when the store has every record before it.

Every write of saga state goes through here, so each saga's changelog records are in the
order of its writes. faust's commit flushes its buffer and then aiokafka's producer, so an
input offset is committed only once the changelog records it caused are delivered, as before.

**The row cache** (``cache_rows`` > 0; Kafka Streams' record cache, and what Quix Streams'
transactions do until a checkpoint): a write that decided no output is kept here, newest state
per saga, instead of going to the store and the changelog at once; reads look here first. A
cached state is encoded (``rows.encode``) when it is written, so a saga that changes several
times between commits is encoded once.
``flush`` writes the cached rows, the store first and then their changelog records; it is the
checkpoint's first step (``tracker.stream.checkpoint``, before every commit), and runs when the
cache is full. So a saga that
changes several times between commits costs one changelog record, not one per change, and:

* no input offset is committed before the rows it caused are in the changelog: a crash loses
  only rows of uncommitted input, which is read again and re-applied (the machine is
  deterministic; nothing the lost rows decided left the worker, see the next point);
* an output (a compensation, an outcome, a decision) waits for the row that decided it: the
  producer holds it apart (``Outgoing``'s gate) until the checkpoint has flushed the rows cached
  before it, and then sends it after their changelog records. Every output is recorded in state
  before it leaves, and a saga whose decisions send is still written once per checkpoint;
* a saga's changelog records stay in the order of its writes: the cache keeps one row per key,
  and every send goes through one lock.

**Rows are written without RocksDB's write-ahead log** (``tables.unlogged``; Kafka Streams
runs its stores so, the changelog being the record): a process that dies loses what its stores'
memtables held, and a worker trusts its stores only after a clean stop anyway
(``tracker.stream.clean_stop``), which ``persist`` makes durable (every memtable to its files)
where faust waits for its streams to be empty on a revocation or stop, stores still open.

**How far each store has its changelog** is kept here as records are answered, and written to
the store (faust's persisted offset, where its recovery starts) by ``record_offsets``: the
checkpoint's last step, once per commit instead of one RocksDB write per record.

**A worker that was frozen** (SIGSTOP, a suspended VM) for longer than its session timeout has
lost its partitions to another worker, which re-applies their uncommitted input. What it would
write now (its cached rows, or the next change) lands in the changelog *after* the new owner's
records and would win on the next recovery. ``alive`` (a timer, and every write) notices the gap
and exits the worker before it writes anything; a restart starts from the committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from functools import partial
from typing import Any, Protocol

from faust.types import TP, TableT

from tables import rows, unlogged
from tracker.core.state import SagaState
from tracker.kafka.internals import open_stores, partition_store
from tracker.kafka.outgoing import Outgoing
from tracker.ops.metrics import Metrics
from tracker.stream.restart import exit_to_restart

log = logging.getLogger(__name__)


class Encodes(Protocol):
    """A row encoded when it is written (the track processor's ``indexes.Changed``: the state with
    its head)."""

    def encode(self) -> bytes: ...


Value = SagaState | Encodes | bytes  # a state, a row that encodes itself, or a row already encoded


def encoded(value: Value) -> bytes:
    """The row as stored: a state or a row that encodes itself encoded, a row already encoded as it is."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, SagaState):
        return rows.encode(value)
    return value.encode()


class Derived(Protocol):
    """What is built from the stored rows and must be rebuilt when rows are lost (``Indexes``,
    with the decoded states kept under each partition's index)."""

    def invalidate(self, partitions: Iterable[int]) -> None: ...


class StateWrites(Protocol):
    """Where the track processor writes saga state (the benchmark has a stand-in without faust)."""

    async def put(self, partition: int, key: bytes, value: Value) -> None: ...

    def get(self, key: bytes, partition: int | None = None) -> bytes | None: ...


class StateCache:
    def __init__(
        self,
        table: TableT,
        *,
        producer: Outgoing | None = None,
        cache_rows: int = 0,
        frozen_after: float = 0.0,
        metrics: Metrics | None = None,
        derived: Derived | None = None,
    ) -> None:
        """``producer``: where changelog records go (default: the table's app's, faust's
        producer). ``cache_rows``: most rows the cache holds before it is flushed; 0: every write goes
        through (the agent tests' memory store always does). ``frozen_after``: the session
        timeout, seconds (0: not watched). ``derived``: told of partitions whose cached rows
        were dropped, so that nothing built from a row that never reached the store is kept."""
        self.table, self.cache_rows, self.frozen_after, self.derived = table, cache_rows, frozen_after, derived
        self.producer = producer
        self.through_rows: Any = None
        self.flushed_rows: Any = None
        if metrics is not None:
            self.through_rows = metrics.state_rows_written.labels("through")
            self.flushed_rows = metrics.state_rows_written.labels("flush")
            metrics.state_rows_cached.set_function(lambda: len(self.rows))
        self.ran: float | None = None  # when this worker's event loop last ran ``alive``
        self.rows: dict[bytes, tuple[int, Value]] = {}  # the cache: key -> (partition, value)
        self.sending = asyncio.Lock()  # changelog records leave in the order rows were stored
        # Rows stored whose changelog records the broker has not answered yet (handed to the
        # producer, or about to be), and when the last answer came: for the producer watchdog,
        # and a stop with any is not clean (``clean_stop``: the store has rows the changelog lacks).
        self.unconfirmed = 0
        self.moved = time.monotonic()
        self.gaps: set[int] = set()  # partitions whose changelog has records this store lacks
        # How far each store has its changelog, as answered since the last ``record_offsets``.
        self.recorded: dict[TP, int] = {}
        self.unlogged = unlogged()
        self.lost: set[int] = set()  # partitions whose cached rows a flush dropped, for the next checkpoint

    def alive(self) -> None:
        """The event loop runs (a timer calls this every second, and so does every write). A gap
        longer than the session timeout means the worker was frozen and its partitions moved:
        exit before writing anything stale."""
        now = time.monotonic()
        if self.frozen_after and self.ran is not None and now - self.ran > self.frozen_after:
            exit_to_restart(
                f"this worker did not run for {now - self.ran:.0f}s, longer than its session timeout "
                f"({self.frozen_after:g}s): its partitions have moved and its {len(self.rows)} cached rows are stale"
            )
        self.ran = now

    def get(self, key: bytes, partition: int | None = None) -> bytes | None:
        """The saga's newest row: the cache, else the store. Given its partition, read that
        partition's store directly: faust's table ``get`` reads RocksDB twice (contains, then
        get)."""
        found = self.rows.get(key)
        if found is not None:
            return encoded(found[1])
        db = partition_store(self.table, partition) if partition is not None else None
        return db.get(key) if db is not None else self.table.get(key)

    async def put(self, partition: int, key: bytes, value: Value) -> None:
        """Cache the row, or (no cache) store it and send its changelog record. Either way the row
        is readable before the first await: a caller's load, decision and write stay one step of
        the event loop."""
        db = partition_store(self.table, partition)
        if db is None:  # the memory store of the agent tests: faust's own write
            self.table[key] = encoded(value)
            return
        self.alive()
        if self.cache_rows:
            self.rows[key] = (partition, value)
            if len(self.rows) >= self.cache_rows:
                self.lost |= await self.flush()  # told to the next checkpoint's flush
            return
        value = encoded(value)
        db.put(key, value, self.unlogged)
        self.unconfirmed += 1
        if self.through_rows is not None:
            self.through_rows.inc()
        async with self.sending:  # after the records of a flush that stored its rows earlier
            await self._send(partition, key, value)

    async def flush(self) -> set[int]:
        """Write every cached row: all to their stores first (no await in between, so a read
        finds each row in the cache or the store), then their changelog records. Returns once
        every row stored so far has its record with the producer, this flush's or another's.

        A row of a partition whose store is no longer open here is dropped: its input was not
        committed (every commit flushes first, and commits nothing of the feed's after a drop),
        so the partition's owner reads it again. Returns those partitions, and those of drops
        since the last call (a flush the full cache ran itself)."""
        lost, self.lost = self.lost, set()
        if not self.rows:
            # Another flush (the full cache's own, inside a write) may have stored its rows and
            # still be handing their changelog records over: wait for it, or the checkpoint
            # would flush the producer and commit input whose records never left.
            async with self.sending:
                return lost
        self.alive()
        cached_rows, self.rows = self.rows, {}
        sends: list[tuple[int, bytes, bytes]] = []
        dropped: dict[int, int] = {}
        for key, (partition, cached) in cached_rows.items():
            db = partition_store(self.table, partition)
            if db is None:
                dropped[partition] = dropped.get(partition, 0) + 1
                continue
            value = encoded(cached)
            db.put(key, value, self.unlogged)
            sends.append((partition, key, value))
        self.unconfirmed += len(sends)
        for partition, n in dropped.items():
            log.warning("%d cached rows of partition %d dropped: it is no longer open here", n, partition)
        if dropped and self.derived is not None:
            # The partition's index rows and decoded states (``Hot``) were made from the dropped
            # rows: kept, a re-read input record would find its saga already past it (a
            # duplicate, not written), and the store would never get the change.
            self.derived.invalidate(dropped)
        if self.flushed_rows is not None:
            self.flushed_rows.inc(len(sends))
        async with self.sending:
            for partition, key, value in sends:
                await self._send(partition, key, value)
        return lost | set(dropped)

    async def _send(self, partition: int, key: bytes, value: bytes) -> None:
        topic = self.table.changelog_topic.get_topic_name()
        try:
            producer: Any = self.producer if self.producer is not None else self.table.app.producer
            delivery = await producer.send(topic, key, value, partition, None, None)
        except Exception:
            # As a failed delivery (below): the row is stored, its record will not be; a caller
            # that dead-lettered the input instead would let it be committed.
            log.exception("changelog record for partition %d not sent", partition)
            exit_to_restart(f"changelog record for partition {partition} not sent")
        delivery.add_done_callback(partial(self._delivered, partition))

    def _delivered(self, partition: int, delivery: Any) -> None:
        self.unconfirmed -= 1
        self.moved = time.monotonic()
        if delivery.cancelled() or delivery.exception() is not None:
            # The row is in the local store but not in the changelog, and faust's commit does
            # not look at delivery results: committing the input offset after this would lose
            # the state on the next recovery. Exit; a restart reprocesses from the last commit.
            error = "cancelled" if delivery.cancelled() else repr(delivery.exception())
            exit_to_restart(f"changelog record for partition {partition} not delivered ({error})")
        meta = delivery.result()
        if partition_store(self.table, partition) is None:  # the partition moved away meanwhile
            return
        # How far this store has the changelog: recovery reads it from the next offset on.
        # faust's own write records every delivered offset; this one only the next one after
        # what the store has. A record this worker handed over before a pause (SIGSTOP, a long
        # GC) is delivered after the records the partition's new owner wrote meanwhile, which
        # this store never read: recording its offset would make the next recovery skip them
        # (found by the fault harness: every saga the other worker touched lost its state).
        tp = TP(meta.topic, meta.partition)
        persisted = self.recorded.get(tp)
        if persisted is None:
            store: Any = self.table.data
            stored = store.persisted_offset(tp)
            persisted = -1 if stored is None else stored
        if meta.offset == persisted + 1:
            self.recorded[tp] = meta.offset
            self.gaps.discard(partition)
        elif partition not in self.gaps:  # once, not for every record until the next recovery
            self.gaps.add(partition)
            log.warning(
                "changelog %s has records this store has not read before offset %d (it has up to %s):"
                " the next recovery of the partition reads them",
                tp,
                meta.offset,
                persisted,
            )

    def record_offsets(self) -> None:
        """Write how far each open store has its changelog (the checkpoint's last step). Every
        rebalance and stop runs a checkpoint before faust's recovery reads these offsets, so what
        is kept here is never behind what faust itself wrote to a store."""
        recorded, self.recorded = self.recorded, {}
        store: Any = self.table.data
        for tp, offset in recorded.items():
            if partition_store(self.table, tp.partition) is not None:
                store.set_persisted_offset(tp, offset)

    def persist(self) -> None:
        """Flush every open store's memtable to its files: rows written without the WAL survive
        the process only so. Where faust waits for its streams to be empty (a revocation or a
        stop, after the checkpoint), before it drops its stores."""
        for db in open_stores(self.table):
            db.flush()
