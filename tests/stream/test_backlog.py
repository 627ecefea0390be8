"""A generation built by replay takes live events in place only once it applied the replayed
backlog of their partition; before that they go through the saga log, behind it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from faust.types import TP

from tracker.stream.backlog import Backlog

LOG = "app-g2-saga-log"


@dataclass
class Registry:
    generation: int
    built: dict[str, Any] | None = None

    def build(self) -> dict[str, Any] | None:
        return self.built


@dataclass
class Progress:
    next_offset: dict[TP, int] = field(default_factory=dict)


def test_generation_one_is_never_replayed_and_applies_in_place() -> None:
    assert not Backlog(Registry(1), Progress(), LOG).pending(0)


def test_a_replayed_generation_forwards_until_it_knows_where_its_backlog_ends() -> None:
    registry = Registry(2)
    backlog = Backlog(registry, Progress(), LOG)
    assert backlog.pending(0)  # the registry is not read yet
    registry.built = {"state": "feeding"}
    assert backlog.pending(0)  # the replay still writes the backlog


def test_a_partition_is_in_place_again_once_its_backlog_is_applied() -> None:
    progress = Progress()
    backlog = Backlog(Registry(2, {"state": "fed", "saga_log_end": {"0": 5, "1": 2}}), progress, LOG)
    assert backlog.pending(0) and backlog.pending(1)
    assert not backlog.pending(3)  # nothing was replayed into partition 3
    progress.next_offset[TP(LOG, 1)] = 2
    assert not backlog.pending(1) and backlog.pending(0)
    progress.next_offset[TP(LOG, 0)] = 4
    assert backlog.pending(0)
    progress.next_offset[TP(LOG, 0)] = 5
    assert not backlog.pending(0)
    progress.next_offset.clear()  # a rebalance forgets progress: a partition once done stays done
    assert not backlog.pending(0)


def test_a_restart_after_the_backlog_was_applied_learns_it_from_the_committed_offsets() -> None:
    backlog = Backlog(Registry(2, {"state": "fed", "saga_log_end": {"0": 5, "1": 2}}), Progress(), LOG)
    backlog.committed({TP(LOG, 0): 5, TP(LOG, 1): 1, TP("orders", 1): 99})
    assert not backlog.pending(0) and backlog.pending(1)
