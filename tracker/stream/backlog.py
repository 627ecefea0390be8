"""The replayed backlog: while a generation built by replay has not applied the saga-log records
the replay wrote for a state partition, live events of that partition go through the saga log,
behind the backlog, instead of being applied in place.

Replay writes a generation's history into its saga log and commits its ingest offsets at the end
of what it fed; the generation's workers then read live records from there. Applied in place, a
live record (a service confirming a compensation at once) could reach a saga before the replayed
decision that caused it, still waiting in the saga log: the generation would diverge from the
live one (``replay --verify`` fails). Appended to the saga log, it is applied after the backlog,
in log order. The replay records where the backlog ends per partition (``saga_log_end`` in the
generation's build record); a partition is done once this worker has applied its saga log that
far, or the group committed that far (a restart after the backlog was applied).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from faust.types import TP


class Built(Protocol):
    """What the backlog reads of the generations registry (``Generations``)."""

    generation: int

    def build(self) -> Mapping[str, Any] | None: ...


class Applied(Protocol):
    """How far this worker applied each partition it reads (``Progress.next_offset``)."""

    next_offset: dict[TP, int]


class Backlog:
    def __init__(self, generations: Built, progress: Applied, saga_log: str) -> None:
        self.generations, self.progress, self.saga_log = generations, progress, saga_log
        self.done: set[int] = set()  # partitions whose backlog is applied: it never grows again

    def ends(self) -> dict[int, int] | None:
        """Where the replayed backlog ends per partition; None while that is not known."""
        build = self.generations.build()
        if build is None:  # generation 1 is never replayed; a later one has its build record first
            return {} if self.generations.generation == 1 else None
        if build.get("state") == "feeding":
            return None
        return {int(p): int(end) for p, end in (build.get("saga_log_end") or {}).items()}

    def pending(self, partition: int) -> bool:
        """Live events of ``partition`` must go through the saga log, behind the backlog."""
        if partition in self.done:
            return False
        ends = self.ends()
        if ends is None:
            return True  # not known yet (the registry is being read, the replay still feeds)
        end = ends.get(partition, 0)
        if self.progress.next_offset.get(TP(self.saga_log, partition), 0) >= end:
            self.done.add(partition)
            return False
        return True

    def committed(self, offsets: Mapping[TP, int]) -> None:
        """The group's committed saga-log offsets: a partition committed past its backlog is done."""
        ends = self.ends()
        if ends is None:
            return
        for tp, offset in offsets.items():
            if tp.topic == self.saga_log and offset >= ends.get(tp.partition, 0):
                self.done.add(tp.partition)
