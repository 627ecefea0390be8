"""The handoff from faust's consumer to the handlers, on a real faust app, conductor and
consumer (not started: these tests call the per-partition callback as faust's drain loop does)."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from faust.types import TP, Message

from tracker.correlation import Record
from tracker.handoff import Handoff


def message(topic: str, offset: int, generation: int = 0) -> Message:
    return Message(topic, 0, offset, 1.0, 0, [], b"saga-1", b"{}", None, tp=TP(topic, 0), generation_id=generation)


class Fixture:
    def __init__(self) -> None:
        self.app = faust.App(f"handoff-{id(self)}", broker="kafka://127.0.0.1:9")
        self.topic = self.app.topic("orders", "payments", key_type=bytes, value_type=bytes)
        self.app.flow_control.resume()
        self.processed: list[tuple[Any, int]] = []
        self.handoff = Handoff(self.app, lambda tp, offset: self.processed.append((tp, offset)))
        self.applied: list[int] = []
        self.gates: dict[int, asyncio.Event] = {}

    async def handle(self, record: Record) -> None:
        gate = self.gates.get(record.offset)
        if gate is not None:
            await gate.wait()
        self.applied.append(record.offset)

    def acked(self, offset: int, topic: str = "orders") -> bool:
        consumer: Any = self.app.consumer
        return offset in consumer._acked_index[TP(topic, 0)]


@pytest.fixture
async def f() -> Fixture:
    fx = Fixture()
    fx.handoff.route(fx.topic, fx.handle)
    fx.handoff.install()
    # What faust's conductor does when the worker subscribes (the agents' topics): acks on.
    conductor: Any = fx.app.topics
    conductor.add(fx.topic)
    await conductor._update_indices()
    return fx


async def test_routed_topics_get_the_handoff_and_others_faust_callback(f: Fixture) -> None:
    conductor: Any = f.app.topics
    ours = conductor._build_handler(TP("payments", 3), set())
    theirs = conductor._build_handler(TP("elsewhere", 0), set())
    assert ours.__qualname__.startswith("Handoff.callback")
    assert not getattr(theirs, "__qualname__", "").startswith("Handoff.callback")


async def test_each_record_is_tracked_applied_then_acknowledged_in_order(f: Fixture) -> None:
    callback = f.handoff.callback(f.handle)
    consumer: Any = f.app.consumer
    f.gates[0] = asyncio.Event()
    first = asyncio.ensure_future(callback(message("orders", 0)))
    await asyncio.sleep(0.01)
    # In progress: tracked (faust's commit and rebalance wait for it), not acknowledged.
    assert [m.offset for m in consumer.unacked] == [0] and not f.acked(0)
    f.gates[0].set()
    await first
    await callback(message("orders", 1))
    assert f.applied == [0, 1]
    assert f.acked(0) and f.acked(1) and not consumer.unacked
    assert f.processed == [(TP("orders", 0), 0), (TP("orders", 0), 1)]
    # faust's livelock check sees the partition's records taken, as if by a stream.
    assert TP("orders", 0) in f.app.monitor.stream_inbound_time


async def test_a_record_cut_off_by_a_rebalance_completes_before_the_next_starts(f: Fixture) -> None:
    callback = f.handoff.callback(f.handle)
    f.gates[0] = asyncio.Event()
    first = asyncio.ensure_future(callback(message("orders", 0)))
    await asyncio.sleep(0.01)
    first.cancel()  # what faust's drain loop does to the callback when flow control suspends
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(callback(message("orders", 1)))
    await asyncio.sleep(0.01)
    assert f.applied == [] and not second.done()  # never two records in flight
    f.gates[0].set()
    await second
    assert f.applied == [0, 1] and f.acked(0) and f.acked(1)


async def test_a_record_fetched_before_a_rebalance_is_skipped(f: Fixture) -> None:
    callback = f.handoff.callback(f.handle)
    app: Any = f.app
    app.consumer_generation_id = 5
    await callback(message("orders", 0, generation=4))
    await callback(message("orders", 1, generation=5))
    consumer: Any = f.app.consumer
    assert f.applied == [1] and not f.acked(0) and not consumer.unacked
