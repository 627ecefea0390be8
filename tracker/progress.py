"""Per-partition progress of this worker, to decide whether it is behind on its input.

'Behind' (no timeouts fire) means: tables are still recovering or rebalancing, or some
input partition this worker owns (a service topic or the saga log) has more than
``lag_threshold`` records between its end offset and the next offset this worker will
process. A deadline may be due only because its completion is still in that backlog.
"""

from __future__ import annotations

from collections.abc import Iterable

from faust.types import TP


class Progress:
    def __init__(self) -> None:
        self.next_offset: dict[TP, int] = {}  # next offset to process, per partition

    def processed(self, tp: TP, offset: int) -> None:
        self.next_offset[tp] = offset + 1

    def forget(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self.next_offset.pop(tp, None)

    @staticmethod
    def lag(highwater: int, next_offset: int | None) -> int:
        return max(0, highwater - (next_offset or 0))
