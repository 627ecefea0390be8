"""A processor context for tests of the stream layer: no faust, no broker, a clock the test moves.

Kafka Streams' ``TopologyTestDriver.advanceWallClockTime``: punctuators run when the test
advances the clock past their next due time, in time order, so a test proves that nothing
happened before a deadline by advancing to just before it, never by sleeping.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from tracker.stream.context import SINKS, Punctuator


@dataclass
class Sent:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int | None


@dataclass
class Scheduled:
    name: str
    interval: float
    punctuator: Punctuator
    due: float
    runs: int = 0


class FakeContext:
    def __init__(self, now: float = 0.0, partitions: tuple[int, ...] = (0,)) -> None:
        self.now = now
        self.partitions = set(partitions)
        self.sent: dict[str, list[Sent]] = defaultdict(list)
        self.scheduled: list[Scheduled] = []
        self.is_recovering = False

    # --- the Context protocol ----------------------------------------------------------------

    def wall_clock(self) -> float:
        return self.now

    async def send(
        self,
        sink: str,
        key: bytes | None,
        value: bytes | None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        after_rows_of: int | None = None,
    ) -> Any:
        assert sink in SINKS, sink
        self.sent[sink].append(Sent(key, value, list(headers or []), partition))
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered

    def owns(self, partition: int) -> bool:
        return partition in self.partitions

    def active_partitions(self) -> list[int]:
        return sorted(self.partitions)

    def recovering(self) -> bool:
        return self.is_recovering

    def schedule(self, name: str, interval: float, punctuator: Punctuator) -> None:
        self.scheduled.append(Scheduled(name, interval, punctuator, self.now + interval))

    # --- what the test drives ----------------------------------------------------------------

    async def advance_wall_clock(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``, running every punctuation that falls due on the
        way at its own time, earliest first."""
        until = self.now + seconds
        while True:
            due = [s for s in self.scheduled if s.due <= until]
            if not due:
                break
            first = min(due, key=lambda s: s.due)
            self.now = first.due
            first.due += first.interval
            first.runs += 1
            await first.punctuator()
        self.now = until

    def runs(self, name: str) -> int:
        return sum(s.runs for s in self.scheduled if s.name == name)

    def take(self, sink: str) -> list[Sent]:
        """What was sent to ``sink`` since the last take."""
        out, self.sent[sink] = self.sent[sink], []
        return out
