"""Census: how many sagas this worker owns, per partition, by type, status and step.

Kept up to date by the track agent on every change, rebuilt for a partition with its
indexes (see ``indexes``) when it becomes active here, dropped when it leaves. So
gauges need no table scan per scrape and, summed over workers, give the fleet figure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from tracker.core import state as st

IN_FLIGHT = frozenset({st.AWAITING_START, st.RUNNING, st.COMPENSATING, st.FAILED_NEEDS_MANUAL})
Key = tuple[str, str, str]  # saga type, status, step ("" when none)


def key_of(summary: Mapping[str, Any] | None) -> Key | None:
    if summary is None or summary["status"] not in IN_FLIGHT:
        return None
    return summary["saga_type"], summary["status"], summary["current_step"] or ""


class Census:
    def __init__(self) -> None:
        self.partitions: dict[int, Counter[Key]] = {}

    def change(self, partition: int, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
        counts = self.partitions.get(partition)
        if counts is None:  # not rebuilt yet: the rebuild will see this change
            return
        before, after = key_of(old), key_of(new)
        if before == after:
            return
        if before is not None:
            counts[before] -= 1
            if counts[before] <= 0:
                del counts[before]
        if after is not None:
            counts[after] += 1

    def rebuild(self, partition: int, counts: Counter[Key]) -> None:
        """A partition's counts, as its index rebuild found them (``key_of`` each summary)."""
        self.partitions[partition] = counts

    def forget(self, partition: int) -> None:
        self.partitions.pop(partition, None)

    def total(self) -> Counter[Key]:
        out: Counter[Key] = Counter()
        for counts in self.partitions.values():
            out.update(counts)
        return out
