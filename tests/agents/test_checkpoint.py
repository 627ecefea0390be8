"""The checkpoint: the commit protocol's order, and no commit past an undelivered output."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.agents.test_state_cache import cached_changelog
from tracker.kafka import internals
from tracker.ops.metrics import Metrics
from tracker.stream.checkpoint import Checkpoint


def exit_(code: int) -> None:
    raise SystemExit(code)


async def test_faust_s_commit_runs_the_checkpoint_first() -> None:
    """faust's commit awaits ``app.producer.flush()`` before it commits offsets; the hook makes
    that flush the checkpoint: the state cache first, then the producer's own flush."""
    cache, store, producer = cached_changelog()
    order: list[str] = []

    async def faust_flush() -> None:  # faust's: the buffer, then aiokafka's producer
        order.append(f"producer flush, {len(producer.sent)} changelog records handed over before it")

    producer.flush = faust_flush  # type: ignore[attr-defined]
    app: Any = SimpleNamespace(producer=producer)
    checkpoint = Checkpoint(cache, Metrics(CollectorRegistry()))
    internals.before_commit(app, checkpoint.commit)
    await cache.put(0, b"saga-1", b"v1")  # cached: nothing decided to send
    assert producer.sent == []
    await app.producer.flush()  # what faust's commit awaits
    assert order == ["producer flush, 1 changelog records handed over before it"]
    assert store._dbs[0] == {b"saga-1": b"v1"} and checkpoint.commits == 1


class Held:
    """``Outgoing`` as the checkpoint sees it: outputs gated (``gate``: one for a saga of a state
    partition) and what was released and shipped when, against the changelog records sent."""

    def __init__(self, producer: Any) -> None:
        self.producer, self.order = producer, list[str]()
        self.gated: list[int] = []  # each gated output's state partition, oldest first
        self.released = 0

    def gate(self, partition: int) -> None:
        self.gated.append(partition)

    def mark(self) -> int:
        return len(self.gated)

    async def release(self, mark: int, dropped: Collection[int] = ()) -> int:
        leaving, self.released = self.gated[self.released : mark], mark
        sent = [p for p in leaving if p not in dropped]
        unsent = len(leaving) - len(sent)
        self.order.append(f"release {sent} (dropped {unsent}), after {len(self.producer.sent)} changelog record(s)")
        return len(leaving) - len(sent)

    async def ship(self) -> None:
        self.order.append(f"ship, after {len(self.producer.sent)} changelog record(s)")


async def test_outputs_leave_after_their_rows_and_everything_held_before_the_producer_flush() -> None:
    """Steps 1 and 2: the outputs decided before the state cache's flush took its rows are
    released once those rows' changelog records are with the producer, those of a dropped
    partition are not, and one decided while the flush hands its records over waits for the
    next checkpoint; then everything held is handed over, before the producer flush waits for the
    broker's answers."""
    cache, store, producer = cached_changelog()
    held = Held(producer)

    async def flush_producer() -> None:
        held.order.append("producer flush")

    checkpoint = Checkpoint(cache, Metrics(CollectorRegistry()), outgoing=held)
    await cache.put(0, b"saga-1", b"v1")
    held.gate(0)  # saga-1's output, decided with v1
    await cache.put(1, b"saga-2", b"w1")
    held.gate(1)
    del store._dbs[1]  # partition 1 left before the flush: saga-2's row is dropped, and its output
    producer.gate = asyncio.Event()  # the producer's buffer is full: the flush waits in its send
    committing = asyncio.ensure_future(checkpoint.commit(flush_producer))
    await asyncio.sleep(0)
    await cache.put(0, b"saga-3", b"x1")  # decided while the flush sends: in the next flush
    held.gate(0)
    producer.gate.set()
    await committing
    released, shipped = "release [0] (dropped 1), after 1 changelog record(s)", "ship, after 1 changelog record(s)"
    assert held.order == [released, shipped, "producer flush"]
    held.order.clear()
    await checkpoint.commit(flush_producer)
    released, shipped = "release [0] (dropped 0), after 2 changelog record(s)", "ship, after 2 changelog record(s)"
    assert held.order == [released, shipped, "producer flush"]
    assert checkpoint.commits == 2


async def test_an_output_the_broker_refused_exits_before_the_offset_is_committed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tracker.stream.restart.os._exit", exit_)
    cache, _, _ = cached_changelog()
    checkpoint = Checkpoint(cache, Metrics(CollectorRegistry()))
    loop = asyncio.get_running_loop()
    ok, refused = loop.create_future(), loop.create_future()
    checkpoint.sent(ok, "compensation record")
    checkpoint.sent(refused, "outcome record")
    flushed: list[bool] = []

    async def flush_producer() -> None:  # aiokafka's flush returns once every record is answered
        ok.set_result(None)
        refused.set_exception(RuntimeError("MessageSizeTooLargeError"))
        await asyncio.sleep(0)  # the done callbacks
        flushed.append(True)

    with pytest.raises(SystemExit) as exited:
        await checkpoint.commit(flush_producer)
    assert exited.value.code == 70 and flushed == [True] and checkpoint.commits == 0
    assert checkpoint.undelivered == ["outcome record (RuntimeError('MessageSizeTooLargeError'))"]


async def test_delivered_outputs_let_the_commit_go_ahead() -> None:
    cache, _, _ = cached_changelog()
    checkpoint = Checkpoint(cache, Metrics(CollectorRegistry()))
    delivery = asyncio.get_running_loop().create_future()
    checkpoint.sent(delivery, "compensation record")
    assert checkpoint.pending == 1

    async def flush_producer() -> None:
        delivery.set_result(None)
        await asyncio.sleep(0)

    await checkpoint.commit(flush_producer)
    assert checkpoint.pending == 0 and checkpoint.undelivered == [] and checkpoint.commits == 1


async def test_a_commit_adds_the_tallied_counts_to_their_counters() -> None:
    cache, _, _ = cached_changelog()
    metrics = Metrics(CollectorRegistry())
    checkpoint = Checkpoint(cache, metrics)
    metrics.count(metrics.routed, "here")
    metrics.count(metrics.routed, "here")
    counter = metrics.routed.labels("here")
    assert counter._value.get() == 0  # tallied, not yet added

    async def flush_producer() -> None:
        return None

    await checkpoint.commit(flush_producer)
    assert counter._value.get() == 2


class Applied:
    """Input offsets as the feed keeps them: advanced as records are applied."""

    def __init__(self) -> None:
        self.positions: dict[str, int] = {"orders/0": 10}
        self.committed: list[dict[str, int]] = []

    def uncommitted(self) -> dict[str, int]:
        return dict(self.positions)

    async def commit(self, offsets: dict[str, int]) -> None:
        self.committed.append(offsets)

    def discard(self) -> None:
        self.positions = {}


async def test_the_feed_s_offsets_are_taken_before_the_flush_and_committed_after_it() -> None:
    """Records applied while the checkpoint flushes may have rows still cached after it: their
    offsets wait for the next checkpoint. Committed only once the producer flushed."""
    cache, store, _ = cached_changelog()
    inputs = Applied()
    checkpoint = Checkpoint(cache, Metrics(CollectorRegistry()), inputs=[inputs])
    order: list[str] = []
    await cache.put(0, b"saga-1", b"v1")

    async def flush_producer() -> None:
        inputs.positions["orders/0"] = 12  # two more records applied meanwhile
        await cache.put(0, b"saga-2", b"v2")
        await asyncio.sleep(0)  # every record handed over answered (the delivery callbacks)
        order.append(f"producer flushed, committed so far {inputs.committed}")

    await checkpoint.commit(flush_producer)
    assert order == ["producer flushed, committed so far []"]
    assert inputs.committed == [{"orders/0": 10}]
    assert store._dbs[0] == {b"saga-1": b"v1"}  # saga-2's row is still cached: its offset was not committed
    # 6. the store records how far it has the changelog: saga-1's record, answered
    assert list(store.offsets.values()) == [0] and not cache.recorded
    await checkpoint.commit(flush_producer)
    assert inputs.committed[-1] == {"orders/0": 12} and store._dbs[0][b"saga-2"] == b"v2"


async def test_checkpoints_run_one_at_a_time() -> None:
    """faust's commit, the feed's timer and a revocation may ask at once: an older checkpoint
    finishing last would commit offsets behind a newer one's."""
    cache, _, _ = cached_changelog()
    inputs = Applied()
    checkpoint = Checkpoint(cache, Metrics(CollectorRegistry()), inputs=[inputs])
    first_in, release = asyncio.Event(), asyncio.Event()

    async def slow_flush() -> None:
        first_in.set()
        await release.wait()

    async def flush() -> None:
        return None

    first = asyncio.ensure_future(checkpoint.commit(slow_flush))
    await first_in.wait()
    inputs.positions["orders/0"] = 20
    second = asyncio.ensure_future(checkpoint.commit(flush))
    await asyncio.sleep(0.01)
    assert inputs.committed == [] and not second.done()  # waits for the first, then takes its own offsets
    release.set()
    await asyncio.gather(first, second)
    assert inputs.committed == [{"orders/0": 10}, {"orders/0": 20}]


async def test_no_input_offset_is_committed_after_rows_were_dropped() -> None:
    """A row whose store closed before the flush (the partition left, the worker stops) never
    reaches the changelog: the feed commits none of the offsets it took, and reads them again."""
    cache, store, _ = cached_changelog()
    inputs = Applied()
    checkpoint = Checkpoint(cache, Metrics(CollectorRegistry()), inputs=[inputs])
    await cache.put(0, b"saga-1", b"v1")
    del store._dbs[0]  # the partition's store closed

    async def flush_producer() -> None:
        return None

    await checkpoint.commit(flush_producer)
    assert inputs.committed == [] and inputs.positions == {}


async def test_rows_a_full_cache_dropped_keep_the_next_checkpoint_from_committing() -> None:
    """The cache flushes itself when full; rows it dropped then (their store closed) are told to
    the next checkpoint, which commits none of the feed's offsets."""
    cache, store, _ = cached_changelog(rows=2)
    inputs = Applied()
    checkpoint = Checkpoint(cache, Metrics(CollectorRegistry()), inputs=[inputs])
    await cache.put(0, b"saga-1", b"v1")
    del store._dbs[0]  # partition 0's store closed
    await cache.put(1, b"saga-2", b"w1")  # full: flushed here, saga-1's row dropped
    assert cache.rows == {} and store._dbs[1] == {b"saga-2": b"w1"}

    async def flush_producer() -> None:
        return None

    await checkpoint.commit(flush_producer)
    assert inputs.committed == [] and inputs.positions == {}
    inputs.positions = {"orders/0": 11}
    await checkpoint.commit(flush_producer)  # told once: the next checkpoint commits again
    assert inputs.committed == [{"orders/0": 11}]
