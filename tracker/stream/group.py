"""The group member the feed reads for: faust's, seen through what the feed needs of it
(``tracker.stream.feed.Group``): the assignment, whether records may be applied now, the
group's committed offsets, a fenced commit, and the checkpoint."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import faust
from faust.types import TP

from tracker.kafka import internals
from tracker.stream.catchup import Progress


class FaustGroup:
    def __init__(self, app: faust.App, topics: Collection[str], progress: Progress) -> None:
        """``topics``: the feed's (faust's own consumer keeps their partitions paused)."""
        self.app, self.topics, self.progress = app, frozenset(topics), progress
        internals.keep_paused(app, self.topics)

    def ready(self) -> bool:
        app: Any = self.app
        return bool(
            app.flow_control.is_active()
            and not app.rebalancing
            and not app.in_recovery
            and app.tables.recovery.completed.is_set()
        )

    def assigned(self) -> frozenset[TP]:
        return frozenset(tp for tp in self.app.assignor.assigned_actives() if tp.topic in self.topics)

    async def committed(self, tps: list[TP]) -> dict[TP, int | None]:
        return await self.progress.committed(tps)

    async def commit(self, offsets: Mapping[TP, int]) -> bool:
        return await internals.commit_offsets(self.app, offsets)

    async def checkpoint(self) -> None:
        await self.app.producer.flush()  # this app's producer flush is the checkpoint (``internals.before_commit``)
