"""Restore: bring the saga store of each active partition up to its changelog in batches.

faust restores a table record by record through its recovery loop (an ``asyncio.wait_for``,
two formatted debug lines and its progress bookkeeping per record; bench/README.md measures
it against a raw read of the same changelog). Before that loop starts, once faust has read where each
active partition's store stands and where its changelog ends, this reads the changelog
from there with a consumer of its own, in large fetches, and writes each fetched batch
with the partition's offset in one RocksDB write batch, faust's way of recording how far a
store is (``__faust\\0offset__``). faust's recovery then starts from that offset and finds
little or nothing left to read. Standby partitions stay with faust.

Nothing changes in what is restored or in how far: the same records, up to the end faust
measured, never past it. A batch and its offset are written together, so a crash or a
rebalance between batches leaves the store at a consistent offset and faust's recovery
(or the next restore) goes on from there. It stops at a time budget, on a new rebalance,
or when the broker stops answering before the end it reported; faust reads the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, MutableMapping

import rocksdict
from aiokafka.structs import TopicPartition
from faust.types import TP, TableT

from tables import unlogged
from tracker.kafka import clients
from tracker.kafka.internals import STORE_OFFSET_KEY, partition_store
from tracker.ops.metrics import Metrics

log = logging.getLogger(__name__)

IDLE_LIMIT = 10  # empty fetches in a row before leaving the rest to faust (a wrong end offset)


class Restore:
    def __init__(
        self,
        table: TableT,
        bootstrap: str,
        fetch_max_bytes: int,
        metrics: Metrics,
        changed: Callable[[set[int]], None],
    ) -> None:
        """``changed``: called with the partitions whose state was written (their indexes
        are stale), as faust's own changelog batches are reported."""
        self.table, self.bootstrap, self.fetch_max_bytes = table, bootstrap, fetch_max_bytes
        self.metrics, self.changed = metrics, changed

    def heal(self, tps: set[TP], offsets: MutableMapping[TP, int], highwaters: Mapping[TP, int | None]) -> list[int]:
        """Wipe each partition store that is ahead of its changelog, so it is restored from the
        changelog as it is (Kafka Streams does the same for a corrupted task). A store records how
        far it has the changelog; a changelog topic deleted or recreated under a kept volume ends
        before that, and faust would refuse to start (``ConsistencyError``) at every restart.
        Returns the partitions wiped."""
        changelog = self.table.changelog_topic.get_topic_name()
        wiped = []
        for tp in sorted(tps):
            stored, end = offsets.get(tp), highwaters.get(tp)
            if tp.topic != changelog or stored is None or end is None or stored <= end:
                continue
            db = partition_store(self.table, tp.partition)
            if db is None:
                continue
            db.delete_range(b"", b"\xff" * 64)  # every key (saga ids are UTF-8: never 0xff), the offset too
            for key in list(db.keys()):  # whatever sorted past that bound
                db.delete(key)
            offsets[tp] = -1  # faust's "nothing of the changelog read yet"
            wiped.append(tp.partition)
            log.warning(
                "store of %s is at changelog offset %d but the changelog ends at %d (deleted or recreated?): "
                "wiped, restoring it from the changelog",
                tp,
                stored,
                end,
            )
        if wiped:
            self.metrics.store_resets.inc(len(wiped))
            self.changed(set(wiped))
        return wiped

    async def run(
        self,
        tps: set[TP],
        offsets: MutableMapping[TP, int],
        highwaters: Mapping[TP, int | None],
        budget: float,
        stop: Callable[[], bool] = lambda: False,
    ) -> dict[int, int]:
        """Restore each partition in ``tps`` from ``offsets[tp] + 1`` to ``highwaters[tp]``
        (both inclusive offsets, faust's convention), advancing ``offsets`` as batches are
        written. Returns the records restored per partition."""
        changelog = self.table.changelog_topic.get_topic_name()
        todo: dict[TopicPartition, tuple[TP, int]] = {}
        for tp in tps:
            last, end = offsets.get(tp), highwaters.get(tp)
            if tp.topic != changelog or end is None or partition_store(self.table, tp.partition) is None:
                continue
            if (last if last is not None else -1) < end:
                todo[TopicPartition(tp.topic, tp.partition)] = (tp, end)
        restored: dict[int, int] = {}
        if not todo:
            return restored
        began = time.perf_counter()
        deadline = time.monotonic() + budget
        consumer = clients.consumer(
            self.bootstrap,
            purpose="restore",
            enable_auto_commit=False,
            max_partition_fetch_bytes=self.fetch_max_bytes,
            request_timeout_ms=10_000,
        )
        await consumer.start()
        try:
            consumer.assign(list(todo))
            for part, (tp, _end) in todo.items():
                last = offsets.get(tp)
                consumer.seek(part, (last if last is not None else -1) + 1)
            idle = 0
            while todo and idle < IDLE_LIMIT and time.monotonic() < deadline and not stop():
                fetched = await consumer.getmany(*todo, timeout_ms=500)
                idle = 0 if any(fetched.values()) else idle + 1
                for part, records in fetched.items():
                    if part not in todo or not records:
                        continue
                    tp, end = todo[part]
                    db = partition_store(self.table, tp.partition)
                    if db is None:  # closed under us: partitions moved; faust takes over
                        del todo[part]
                        continue
                    batch = rocksdict.WriteBatch(raw_mode=True)
                    last, count = None, 0
                    for record in records:
                        if record.offset > end:
                            break
                        if record.value is None:
                            batch.delete(record.key)
                        else:
                            batch.put(record.key, record.value)
                        last, count = record.offset, count + 1
                    if last is not None:
                        batch.put(STORE_OFFSET_KEY, str(last).encode())
                        db.write(batch, unlogged())  # no WAL: a stop that is not clean restores again
                        offsets[tp] = last
                        restored[tp.partition] = restored.get(tp.partition, 0) + count
                    if last is None or last >= end:
                        consumer.pause(part)
                        del todo[part]
                for part in [p for p in todo if not fetched.get(p)]:
                    # Past the end with no record there (a transaction marker, compaction):
                    # the offset stays at the last record restored, as faust would leave it.
                    if await consumer.position(part) > todo[part][1]:
                        consumer.pause(part)
                        del todo[part]
        finally:
            await consumer.stop()
            if restored:
                self.changed(set(restored))
        seconds = time.perf_counter() - began
        total = sum(restored.values())
        self.metrics.restored_records.inc(total)
        left = {tp.partition: end - offsets.get(tp, -1) for tp, end in todo.values()}
        log.info(
            "restored %d changelog records in %.1fs (%s)%s",
            total,
            seconds,
            ", ".join(f"partition {p}: {n}" for p, n in sorted(restored.items())) or "nothing",
            f"; left to faust's recovery: {left}" if left else "",
        )
        return restored
