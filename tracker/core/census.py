"""Census: how many sagas this worker owns, per partition, by type, status and step, and
their flow marks (``flow``: pending, failed and compensated per step, step durations).

Kept up to date by the track agent on every change, rebuilt for a partition with its
indexes (see ``indexes``) when it becomes active here, dropped when it leaves. So gauges and
``/sagas/stats`` need no table scan and, summed over workers, give the fleet figure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from tracker.core import state as st
from tracker.core.flow import Mark, marks

IN_FLIGHT = frozenset({st.AWAITING_START, st.RUNNING, st.COMPENSATING, st.FAILED_NEEDS_MANUAL})
Key = tuple[str, str, str]  # saga type, status, step ("" when none)


def key_of(summary: Mapping[str, Any] | None) -> Key | None:
    if summary is None or summary["status"] not in IN_FLIGHT:
        return None
    return summary["saga_type"], summary["status"], summary["current_step"] or ""


class Census:
    def __init__(self) -> None:
        self.partitions: dict[int, Counter[Key]] = {}  # in flight, by (type, status, step)
        self.flows: dict[int, Counter[Mark]] = {}  # every stored saga's flow marks

    def change(self, partition: int, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
        counts = self.partitions.get(partition)
        if counts is None:  # not rebuilt yet: the rebuild will see this change
            return
        before, after = key_of(old), key_of(new)
        if before != after:
            if before is not None:
                _less(counts, before)
            if after is not None:
                counts[after] += 1
        # A saga's marks are distinct; most of them stay as they were (its type and status, the
        # durations of steps done before): only those that differ are counted.
        gone, came = marks(old) if old is not None else [], marks(new) if new is not None else []
        if gone == came:
            return
        flows = self.flows[partition]
        for mark in gone:
            if mark not in came:
                _less(flows, mark)
        for mark in came:
            if mark not in gone:
                flows[mark] += 1

    def rebuild(self, partition: int, counts: Counter[Key], flows: Counter[Mark]) -> None:
        """A partition's counts and marks, as its index rebuild found them."""
        self.partitions[partition] = counts
        self.flows[partition] = flows

    def forget(self, partition: int) -> None:
        self.partitions.pop(partition, None)
        self.flows.pop(partition, None)

    def total(self) -> Counter[Key]:
        out: Counter[Key] = Counter()
        for counts in self.partitions.values():
            out.update(counts)
        return out

    def marks(self, partitions: Iterable[int]) -> Counter[Mark]:
        out: Counter[Mark] = Counter()
        for p in partitions:
            out.update(self.flows.get(p, ()))
        return out


def _less(counts: Counter[Any], key: Any) -> None:
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]
