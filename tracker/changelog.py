"""Changelog: write a saga's state row to its partition's store and the table's changelog.

faust's table write (``table[key] = value``) hands the changelog record to faust's producer
buffer: one record at a time through a queue, a task, a future chain and two callbacks, and
the row through faust's codecs and key index. ``python -m bench.floor``: an agent writing
each record that way costs ~45 µs of CPU per record more than the same agent putting the row
in the partition's RocksDB and sending the record on the producer itself. This does what
faust's write does (the row, its changelog record on the same partition, the persisted offset
once the record is delivered) without that machinery, and records that offset only when the
store has every record before it.

Every write of saga state goes through here, so each saga's changelog records are in the
order of its writes. faust's commit flushes its buffer and then aiokafka's producer, so an
input offset is committed only once the changelog records it caused are delivered, as before.
"""

from __future__ import annotations

import logging
import os
import time
from functools import partial
from typing import Any, Protocol

from faust.types import TP, TableT

from tables import partition_store

log = logging.getLogger(__name__)


class StateWrites(Protocol):
    """Where ``Tracking`` writes saga state (the benchmark has a stand-in without faust)."""

    async def put(self, partition: int, key: bytes, value: bytes) -> None: ...


class Changelog:
    def __init__(self, table: TableT) -> None:
        self.table = table
        # For the producer watchdog: records handed to the producer and not yet answered,
        # and when the last answer came.
        self.in_flight = 0
        self.moved = time.monotonic()
        self.gaps: set[int] = set()  # partitions whose changelog has records this store lacks

    async def put(self, partition: int, key: bytes, value: bytes) -> None:
        """Store the row, then send its changelog record. The row is stored before the first
        await: a caller's load, decision and write stay one step of the event loop."""
        db = partition_store(self.table, partition)
        if db is None:  # the memory store of the agent tests: faust's own write
            self.table[key] = value
            return
        db.put(key, value)
        app: Any = self.table.app
        topic = self.table.changelog_topic.get_topic_name()
        try:
            delivery = await app.producer.send(topic, key, value, partition=partition, timestamp=None, headers=None)
        except Exception:
            # As a failed delivery (below): the row is stored, its record will not be; a caller
            # that dead-lettered the input instead would let it be committed.
            log.critical("changelog record for partition %d not sent; exiting to restart", partition, exc_info=True)
            os._exit(70)
        self.in_flight += 1
        delivery.add_done_callback(partial(self._delivered, partition))

    def _delivered(self, partition: int, delivery: Any) -> None:
        self.in_flight -= 1
        self.moved = time.monotonic()
        if delivery.cancelled() or delivery.exception() is not None:
            # The row is in the local store but not in the changelog, and faust's commit does
            # not look at delivery results: committing the input offset after this would lose
            # the state on the next recovery. Exit; a restart reprocesses from the last commit.
            error = "cancelled" if delivery.cancelled() else repr(delivery.exception())
            log.critical("changelog record for partition %d not delivered (%s); exiting to restart", partition, error)
            os._exit(70)
        meta = delivery.result()
        if partition_store(self.table, partition) is None:  # the partition moved away meanwhile
            return
        # How far this store has the changelog: recovery reads it from the next offset on.
        # faust's own write records every delivered offset; this one only the next one after
        # what the store has. A record this worker handed over before a pause (SIGSTOP, a long
        # GC) is delivered after the records the partition's new owner wrote meanwhile, which
        # this store never read: recording its offset would make the next recovery skip them
        # (found by the fault harness: every saga the other worker touched lost its state).
        store: Any = self.table.data
        tp = TP(meta.topic, meta.partition)
        persisted = store.persisted_offset(tp)
        if meta.offset == (-1 if persisted is None else persisted) + 1:
            store.set_persisted_offset(tp, meta.offset)
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
