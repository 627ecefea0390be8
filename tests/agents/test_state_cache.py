"""How far a partition's store has its changelog, as the tracker's own state writes record it."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import rocksdict
from faust.types import TP
from prometheus_client import CollectorRegistry

from tables import rows
from tracker.core.state import SagaState
from tracker.ops.metrics import Metrics
from tracker.stream.state_cache import Derived, StateCache

TOPIC = "app-sagas-changelog"


class Db(dict[bytes, bytes]):
    """A partition's RocksDB, as far as ``StateCache`` uses it."""

    def put(self, key: bytes, value: bytes, options: Any = None) -> None:
        self[key] = value


class Store:
    """faust's RocksDB store, as far as ``StateCache`` uses it: partition stores and offsets."""

    def __init__(self) -> None:
        self._dbs: dict[int, Db] = {0: Db()}
        self.offsets: dict[TP, int] = {}

    def persisted_offset(self, tp: TP) -> int | None:
        return self.offsets.get(tp)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.offsets[tp] = offset


def store_of(changelog: StateCache) -> Store:
    return changelog.table.data  # type: ignore[return-value]  # the stand-in above


def delivered(offset: int) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(SimpleNamespace(topic=TOPIC, partition=0, offset=offset))
    return future


@pytest.fixture
def changelog() -> StateCache:
    table: Any = SimpleNamespace(data=Store())
    return StateCache(table)


async def test_the_store_records_each_delivered_offset_that_follows_what_it_has(changelog: StateCache) -> None:
    for offset in (0, 1, 2):
        changelog.unconfirmed += 1
        changelog._delivered(0, delivered(offset))
    assert store_of(changelog).offsets == {} and changelog.unconfirmed == 0  # one write per checkpoint, not per record
    changelog.record_offsets()
    assert store_of(changelog).offsets == {TP(TOPIC, 0): 2} and changelog.recorded == {}


async def test_a_late_delivery_after_another_owners_records_does_not_skip_them(
    changelog: StateCache, caplog: pytest.LogCaptureFixture
) -> None:
    changelog._delivered(0, delivered(0))
    # Offsets 1-4 were written by the partition's owner while this worker was paused.
    with caplog.at_level(logging.WARNING):
        changelog._delivered(0, delivered(5))
        changelog._delivered(0, delivered(6))
    changelog.record_offsets()  # the checkpoint of the rebalance that follows
    assert store_of(changelog).offsets == {TP(TOPIC, 0): 0}  # recovery reads 1-6
    assert len([r for r in caplog.records if "has records this store has not read" in r.message]) == 1
    # Once recovery has read them (faust records how far), its own records count again.
    store_of(changelog).set_persisted_offset(TP(TOPIC, 0), 6)
    changelog._delivered(0, delivered(7))
    changelog.record_offsets()
    assert store_of(changelog).offsets == {TP(TOPIC, 0): 7} and not changelog.gaps


async def test_offsets_of_a_store_closed_before_the_checkpoint_are_not_written(changelog: StateCache) -> None:
    changelog._delivered(0, delivered(0))
    store_of(changelog)._dbs.clear()  # revoked: faust dropped the store
    changelog.record_offsets()
    assert store_of(changelog).offsets == {} and changelog.recorded == {}


async def test_an_undelivered_record_exits_the_worker(changelog: StateCache, monkeypatch: pytest.MonkeyPatch) -> None:
    def exit_(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr("tracker.stream.restart.os._exit", exit_)
    failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    failed.set_exception(TimeoutError("no broker"))
    with pytest.raises(SystemExit) as exited:
        changelog._delivered(0, failed)
    assert exited.value.code == 70 and store_of(changelog).offsets == {}


async def test_a_record_the_producer_refuses_exits_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    def exit_(code: int) -> None:
        raise SystemExit(code)

    async def send(*args: Any, **kwargs: Any) -> Any:
        raise TimeoutError("no metadata for the changelog topic")

    monkeypatch.setattr("tracker.stream.restart.os._exit", exit_)
    table: Any = SimpleNamespace(
        data=Store(),
        app=SimpleNamespace(producer=SimpleNamespace(send=send)),
        changelog_topic=SimpleNamespace(get_topic_name=lambda: TOPIC),
    )
    with pytest.raises(SystemExit) as exited:
        await StateCache(table).put(0, b"saga-1", b"{}")
    assert exited.value.code == 70 and table.data._dbs[0] == {b"saga-1": b"{}"}


class Producer:
    """faust's producer, as far as ``StateCache`` sends to it: records in the order handed over,
    each delivered at once unless ``gate`` holds the sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes, bytes]] = []
        self.gate: asyncio.Event | None = None
        self.offsets: dict[int, int] = {}

    async def send(self, topic: str, key: bytes, value: bytes, partition: int, timestamp: Any, headers: Any) -> Any:
        if self.gate is not None:
            await self.gate.wait()
        self.sent.append((partition, key, value))
        offset = self.offsets[partition] = self.offsets.get(partition, -1) + 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(topic=TOPIC, partition=partition, offset=offset))
        return future


def cached_changelog(
    rows: int = 100, metrics: Metrics | None = None, derived: Derived | None = None
) -> tuple[StateCache, Store, Producer]:
    store, producer = Store(), Producer()
    store._dbs[1] = Db()
    table: Any = SimpleNamespace(
        data=store, app=SimpleNamespace(producer=producer), changelog_topic=SimpleNamespace(get_topic_name=lambda: TOPIC)
    )
    return StateCache(table, cache_rows=rows, metrics=metrics, derived=derived), store, producer


async def test_cached_rows_are_read_from_the_cache_and_written_once_per_saga_on_flush() -> None:
    changelog, store, producer = cached_changelog()
    for version in (b"v1", b"v2", b"v3"):
        await changelog.put(0, b"saga-1", version)
    await changelog.put(1, b"saga-2", b"w1")
    assert changelog.get(b"saga-1", 0) == b"v3" and changelog.get(b"saga-2", 1) == b"w1"  # the cache
    assert store._dbs[0] == {} and producer.sent == []  # nothing written until the flush
    await changelog.flush()
    assert store._dbs[0] == {b"saga-1": b"v3"} and store._dbs[1] == {b"saga-2": b"w1"}
    assert sorted(producer.sent) == [(0, b"saga-1", b"v3"), (1, b"saga-2", b"w1")]  # one record each
    await asyncio.sleep(0)  # delivery callbacks
    # Every stored row's record answered: the watchdog sees nothing waiting, a stop now is clean.
    assert not changelog.rows and changelog.get(b"saga-1", 0) == b"v3" and changelog.unconfirmed == 0
    changelog.record_offsets()
    assert store.offsets == {TP(TOPIC, 0): 0, TP(TOPIC, 1): 0}


async def test_a_cached_state_is_encoded_when_it_is_written_not_when_it_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    changelog, store, producer = cached_changelog()
    encoded: list[str] = []
    encode = rows.encode

    def counted(state: SagaState) -> bytes:
        encoded.append(state.status)
        return encode(state)

    monkeypatch.setattr(rows, "encode", counted)
    for status in ("awaiting_start", "running", "compensating"):
        await changelog.put(0, b"saga-1", SagaState(saga_id="saga-1", saga_type="order", version="1", status=status))
    assert encoded == []  # three changes, nothing encoded yet
    await changelog.flush()
    assert encoded == ["compensating"]  # the newest, once
    assert rows.decode(store._dbs[0][b"saga-1"]).status == "compensating" and len(producer.sent) == 1


async def test_a_full_cache_flushed_during_a_flush_sends_its_rows_after_the_first_flushes() -> None:
    """A saga's changelog ends at its newest row: a second flush (the cache filled up again) while
    the first still hands its records over sends after them."""
    changelog, store, producer = cached_changelog(rows=2)
    await changelog.put(0, b"saga-1", b"v1")
    producer.gate = asyncio.Event()  # the producer's buffer is full
    flushing = asyncio.ensure_future(changelog.flush())
    await asyncio.sleep(0)
    assert store._dbs[0] == {b"saga-1": b"v1"}  # stored before the flush's first await
    assert changelog.unconfirmed == 1  # stored, its record not answered: a stop now is not clean
    await changelog.put(0, b"saga-1", b"v2")
    filling = asyncio.ensure_future(changelog.put(0, b"saga-2", b"w1"))  # fills the cache: flushes
    await asyncio.sleep(0)
    assert store._dbs[0] == {b"saga-1": b"v2", b"saga-2": b"w1"}
    producer.gate.set()
    await asyncio.gather(flushing, filling)
    assert producer.sent == [(0, b"saga-1", b"v1"), (0, b"saga-1", b"v2"), (0, b"saga-2", b"w1")]  # the changelog ends at v2


async def test_a_flush_with_nothing_cached_waits_for_another_flush_still_sending() -> None:
    """The checkpoint's flush, while the full cache's own flush (inside a write) still hands its
    records over: returning at once, the checkpoint would commit input whose rows are stored
    here and not yet in the changelog, lost with this worker."""
    changelog, store, producer = cached_changelog(rows=2)
    await changelog.put(0, b"saga-1", b"v")
    producer.gate = asyncio.Event()  # the producer's buffer is full
    filling = asyncio.ensure_future(changelog.put(0, b"saga-2", b"v"))  # fills the cache: flushes
    await asyncio.sleep(0)
    assert not changelog.rows and len(store._dbs[0]) == 2 and producer.sent == []
    checkpoint = asyncio.ensure_future(changelog.flush())
    for _ in range(5):  # loop turns enough for a flush that returns at once
        await asyncio.sleep(0)
    assert not checkpoint.done()  # waits for the records of the rows stored
    producer.gate.set()
    await asyncio.gather(filling, checkpoint)
    assert len(producer.sent) == 2


async def test_a_full_cache_is_flushed_by_the_write_that_fills_it() -> None:
    changelog, store, producer = cached_changelog(rows=3)
    for n in range(3):
        await changelog.put(0, b"saga-%d" % n, b"v")
    assert len(store._dbs[0]) == 3 and len(producer.sent) == 3 and not changelog.rows


class Invalidated(list[int]):
    """The indexes, as far as the state cache tells them of dropped rows."""

    def invalidate(self, partitions: Iterable[int]) -> None:
        self.extend(partitions)


async def test_rows_of_a_partition_that_left_are_dropped_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    derived = Invalidated()
    changelog, store, producer = cached_changelog(derived=derived)
    await changelog.put(0, b"saga-1", b"v1")
    await changelog.put(1, b"saga-2", b"w1")
    del store._dbs[1]  # revoked: its input was not committed, the new owner reads it again
    with caplog.at_level(logging.WARNING):
        await changelog.flush()
    assert producer.sent == [(0, b"saga-1", b"v1")]
    assert any("cached rows of partition 1 dropped" in r.message for r in caplog.records)
    # What was built from the dropped row (index rows, the decoded state) goes with it: the
    # re-read input must find the saga where the store has it.
    assert derived == [1]


async def test_without_a_cache_every_write_goes_through() -> None:
    changelog, store, producer = cached_changelog(rows=0)
    await changelog.put(0, b"saga-1", b"v1")
    assert store._dbs[0] == {b"saga-1": b"v1"} and producer.sent == [(0, b"saga-1", b"v1")]
    assert not changelog.rows


async def test_a_worker_frozen_past_its_session_timeout_exits_before_it_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    def exit_(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr("tracker.stream.restart.os._exit", exit_)
    changelog, store, producer = cached_changelog()
    changelog.frozen_after = 6.0
    changelog.alive()
    await changelog.put(0, b"saga-1", b"v1")
    changelog.ran -= 5.0  # type: ignore[operator]  # the loop ran 5 s ago: busy, not frozen
    changelog.alive()
    await changelog.put(0, b"saga-2", b"w1")
    changelog.ran -= 10.0  # type: ignore[operator]  # SIGSTOP for 10 s: its partitions moved
    with pytest.raises(SystemExit) as exited:
        await changelog.flush()
    assert exited.value.code == 70 and producer.sent == [] and store._dbs[0] == {}
    with pytest.raises(SystemExit):
        await changelog.put(0, b"saga-1", b"v2")
    assert producer.sent == []


async def test_written_and_cached_rows_are_counted() -> None:
    metrics = Metrics(CollectorRegistry())
    changelog, _store, _producer = cached_changelog(metrics=metrics)

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    for n in range(3):
        await changelog.put(0, b"saga-1", b"v%d" % n)
    await changelog.put(0, b"saga-2", b"w1")
    assert sample("saga_tracker_state_rows_cached") == 2.0
    await changelog.flush()
    assert sample("saga_tracker_state_rows_written_total", how="flush") == 2.0  # 4 changes, 2 rows
    assert sample("saga_tracker_state_rows_cached") == 0.0
    uncached, _store, _producer = cached_changelog(rows=0, metrics=metrics)  # every change written at once
    await uncached.put(0, b"saga-3", b"x1")
    await uncached.put(0, b"saga-3", b"x2")
    assert sample("saga_tracker_state_rows_written_total", how="through") == 2.0


CHILD = """
import asyncio, os, sys
from types import SimpleNamespace
import rocksdict
from tests.agents.test_state_cache import Producer, TOPIC
from tracker.stream.state_cache import StateCache

options = rocksdict.Options(raw_mode=True)
options.create_if_missing(True)
db = rocksdict.Rdict(sys.argv[1], options=options)
table = SimpleNamespace(
    data=SimpleNamespace(_dbs={0: db}, persisted_offset=lambda tp: None),
    app=SimpleNamespace(producer=Producer()),
    changelog_topic=SimpleNamespace(get_topic_name=lambda: TOPIC),
)
cache = StateCache(table)
asyncio.run(cache.put(0, b"saga-1", b"v1"))  # no cache: stored at once
if sys.argv[2] == "persist":
    cache.persist()
os._exit(0)  # as a kill: no close, no destructor flushes the memtable
"""


@pytest.mark.parametrize("persisted", [False, True])
def test_rows_are_written_without_the_wal_and_survive_the_process_once_persisted(tmp_path: Path, persisted: bool) -> None:
    """Rows skip RocksDB's write-ahead log (the changelog is the record): a process that dies
    loses its memtable, which is why a store is trusted only after a clean stop, and why the
    stop's ``persist`` flushes every memtable to its files first."""
    path = str(tmp_path / "sagas-0.db")
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", CHILD, path, "persist" if persisted else "kill"], cwd=root, check=True)
    options = rocksdict.Options(raw_mode=True)
    db = rocksdict.Rdict(path, options=options)
    try:
        assert db.get(b"saga-1") == (b"v1" if persisted else None)
    finally:
        db.close()
