"""What this worker can say about itself: the partitions it owns, whether it is ready, its lag.

The read model (``/readyz``, ``/sagas/stats``) and the state gauges ask here, not the
processors: the web layer depends only on this small surface (``tracker.web.api.Worker``).
"""

from __future__ import annotations

from typing import Any

from tracker.stream.catchup import Progress
from tracker.stream.context import Context
from tracker.stream.indexes import Indexes
from tracker.stream.sweeper import Sweeper


class WorkerStatus:
    def __init__(self, context: Context, indexes: Indexes, sweeper: Sweeper, progress: Progress, url: str) -> None:
        self.context, self.indexes, self.sweeper, self.progress, self.url = context, indexes, sweeper, progress, url

    def active_partitions(self) -> list[int]:
        return self.context.active_partitions()

    def recovering(self) -> bool:
        return self.context.recovering()

    def ready(self) -> bool:
        """Recovered, and every active partition indexed: lists are whole and deadlines swept."""
        return not self.recovering() and all(self.indexes.cached(p) is not None for p in self.active_partitions())

    def lag(self) -> dict[str, Any]:
        lags = self.progress.lags
        return {
            "worker": self.url,
            "behind": self.sweeper.behind,
            "catch_up": self.progress.phase,
            "input_lag": {f"{tp.topic}/{tp.partition}": n for tp, n in sorted(lags.items())},
        }
