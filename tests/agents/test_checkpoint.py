"""The checkpoint: the commit protocol's order, and no commit past an undelivered output."""

from __future__ import annotations

import asyncio
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
