"""The stream layer without faust: the track processor and the deadline punctuator on a fake
context whose wall clock the tests advance (no sleeping to prove that nothing happened)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from prometheus_client import CollectorRegistry

from tables import rows
from tests.stream.fake_context import FakeContext
from tracker.core.census import Census
from tracker.core.correlation import Record
from tracker.core.events import Event
from tracker.loader import load_catalog
from tracker.ops.metrics import Metrics
from tracker.stream.deadletters import DeadLetters
from tracker.stream.indexes import Indexes
from tracker.stream.state_cache import Value, encoded
from tracker.stream.sweeper import Sweeper
from tracker.stream.tracking import Tracking

SWEEP = 1.0  # seconds between punctuations
RESEND = 30.0  # seconds before a timeout record nobody applied is sent again


class MemoryState:
    """Saga rows in memory, one dict per partition (the worker's ``StateCache`` on RocksDB)."""

    def __init__(self) -> None:
        self.rows: dict[bytes, tuple[int, bytes]] = {}

    async def put(self, partition: int, key: bytes, value: Value, *, through: bool = False) -> None:
        self.rows[key] = (partition, encoded(value))

    def get(self, key: bytes, partition: int | None = None) -> bytes | None:
        found = self.rows.get(key)
        return None if found is None else found[1]

    def items(self, partition: int, start: bytes) -> Iterable[tuple[bytes, bytes]]:
        return sorted((k, v) for k, (p, v) in self.rows.items() if p == partition and k >= start)


@dataclass
class CaughtUp:
    """The catch-up (``Progress``) as the punctuator reads it, without a broker to measure."""

    is_behind: bool = False
    epoch: int = 0
    lags: dict[Any, int] = field(default_factory=dict)
    wedged: list[Any] = field(default_factory=list)
    watermark: float | None = None
    why: str = ""

    async def behind(self) -> bool:
        return self.is_behind

    async def close(self) -> None:
        return None


@dataclass
class Stream:
    context: FakeContext
    tracking: Tracking
    sweeper: Sweeper
    progress: CaughtUp
    state: MemoryState
    offset: int = 0

    async def apply(self, event: Event) -> None:
        """Hand ``event`` to the track processor as a saga-log record (what the track agent does)."""
        await self.record(orjson.dumps(event.to_dict()), event.saga_id)

    async def record(self, value: bytes | None, saga_id: str) -> None:
        self.offset += 1
        await self.tracking.process(Record("app-saga-log", 0, self.offset, saga_id.encode(), value, [], None))

    async def apply_timeouts(self) -> list[str]:
        """Feed the timeout records the punctuator sent back to the track processor; their types."""
        sent = self.context.take("saga_log")
        for s in sent:
            assert s.key is not None
            await self.record(s.value, s.key.decode())
        return [orjson.loads(cast(bytes, s.value))["type"] for s in sent]

    def saga(self, saga_id: str) -> dict[str, Any]:
        raw = self.state.get(saga_id.encode())
        assert raw is not None
        return cast(dict[str, Any], rows.data(raw))

    def compensations(self) -> list[str]:
        return [orjson.loads(cast(bytes, s.value))["id"] for s in self.context.take("compensation")]


@pytest.fixture
async def stream(tmp_path: Path) -> AsyncIterator[Stream]:
    catalog = load_catalog()
    metrics, census, state = Metrics(CollectorRegistry()), Census(), MemoryState()
    indexes = Indexes(tmp_path / "indexes", catalog, state.items, census, metrics)
    progress = CaughtUp()
    context = FakeContext(now=100.0)
    sweeper = Sweeper(cast(Any, progress), metrics, indexes, interval=SWEEP, resend_after=RESEND)
    dead_letters = DeadLetters(metrics)
    tracking = Tracking(catalog, state, dead_letters, metrics, indexes, deadlines=sweeper)
    for processor in (dead_letters, tracking, sweeper):
        processor.init(context)
    await indexes.ready(0)
    yield Stream(context, tracking, sweeper, progress, state)
    indexes.close()


def order_created(saga_id: str, at: float) -> Event:
    return Event(saga_id=saga_id, saga_type="order_fulfilment", id=f"{saga_id}:created", type="OrderCreated", time=at)


async def test_a_stalled_step_times_out_once_the_wall_clock_passes_its_deadline_and_not_before(stream: Stream) -> None:
    await stream.apply(order_created("o-1", at=100.0))  # payment pending, due at 120
    assert stream.saga("o-1")["deadline"]["due"] == 120.0
    await stream.context.advance_wall_clock(19.5)
    assert stream.context.runs("sweep") == 19  # it looked, every second...
    assert await stream.apply_timeouts() == []  # ...and nothing was due
    await stream.context.advance_wall_clock(1.0)  # 120.5: past the deadline, at the next punctuation
    assert await stream.apply_timeouts() == ["DeadlineReached"]
    assert stream.saga("o-1")["status"] == "compensating"
    assert stream.compensations() == ["o-1:order:compensate:1"]


async def test_no_timeout_fires_while_the_worker_is_behind(stream: Stream) -> None:
    await stream.apply(order_created("o-1", at=100.0))
    stream.progress.is_behind = True  # a completion may still sit in the backlog
    await stream.context.advance_wall_clock(60.0)
    assert await stream.apply_timeouts() == [] and stream.sweeper.due  # counted as stuck, not fired
    stream.progress.is_behind = False
    await stream.context.advance_wall_clock(SWEEP)
    assert await stream.apply_timeouts() == ["DeadlineReached"]


async def test_a_timeout_nobody_applied_is_sent_again_only_after_the_resend_interval(stream: Stream) -> None:
    await stream.apply(order_created("o-1", at=100.0))
    await stream.context.advance_wall_clock(21.0)
    assert len(stream.context.take("saga_log")) == 1  # sent, never applied (lost in a rebalance)
    await stream.context.advance_wall_clock(RESEND - 2 * SWEEP)
    assert stream.context.take("saga_log") == []
    await stream.context.advance_wall_clock(2 * SWEEP)
    assert len(stream.context.take("saga_log")) == 1


async def test_a_timeout_set_aside_while_behind_is_resent_at_the_next_punctuation(stream: Stream) -> None:
    await stream.apply(order_created("o-1", at=100.0))
    await stream.context.advance_wall_clock(21.0)
    stream.sweeper.set_behind(True)  # a rebalance after the sweep sent it
    assert await stream.apply_timeouts() == ["DeadlineReached"]  # the track processor defers it...
    assert stream.saga("o-1")["status"] == "running" and stream.compensations() == []
    stream.sweeper.set_behind(False)
    await stream.context.advance_wall_clock(SWEEP)  # ...and the punctuator sends it again at once
    assert await stream.apply_timeouts() == ["DeadlineReached"]
    assert stream.compensations() == ["o-1:order:compensate:1"]


async def test_a_completion_before_the_deadline_means_no_timeout(stream: Stream) -> None:
    await stream.apply(order_created("o-1", at=100.0))
    await stream.context.advance_wall_clock(10.0)
    await stream.apply(Event(saga_id="o-1", saga_type="order_fulfilment", id="o-1:paid", type="PaymentAuthorized", time=110.0))
    await stream.context.advance_wall_clock(15.0)  # 125: past the first deadline, not the new one (130)
    assert await stream.apply_timeouts() == [] and stream.saga("o-1")["deadline"]["due"] == 130.0


async def test_a_punctuation_during_recovery_sends_nothing(stream: Stream) -> None:
    await stream.apply(order_created("o-1", at=100.0))
    stream.context.is_recovering = True
    await stream.context.advance_wall_clock(30.0)
    assert await stream.apply_timeouts() == [] and stream.sweeper.behind
