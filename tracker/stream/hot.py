"""Hot: the decoded states of the sagas applied lately, so a saga in flight is decoded once
while it stays hot, not once per event (bench/README.md: the state decode was a fifth of the
decisions' cost).

An entry is the saga's newest state as the track processor stored it. Each entry belongs to the
index of its partition it was made under: every event that can change a stored row other than
the track processor's own write (a recovery or a standby applying changelog records, a restore,
the partition leaving), or lose one it wrote (the state cache dropping the rows of a partition
whose store closed), drops that index (``Indexes.invalidate``), and an entry of an index that
is not the partition's current one is a miss. ``apply`` never changes the state it is given (it
copies), so a cached state object is never changed in place.

Bounded: the sagas written least recently leave first. An ``OrderedDict``, whose oldest entry
is at hand: a plain dict used as a queue finds its first live entry by stepping over every
entry deleted before it since its last resize, so a write would cost more the more sagas are
kept.
"""

from __future__ import annotations

from collections import OrderedDict

from tracker.core.state import SagaState


class Hot:
    def __init__(self, limit: int) -> None:
        """``limit``: most sagas kept; 0 keeps none."""
        self.limit = limit
        self.entries: OrderedDict[str, tuple[object, SagaState]] = OrderedDict()

    def get(self, saga_id: str, index: object) -> SagaState | None:
        """The saga's state, if cached under ``index`` (its partition's current one)."""
        found = self.entries.get(saga_id)
        if found is None or found[0] is not index:
            return None
        return found[1]

    def put(self, saga_id: str, index: object, state: SagaState) -> None:
        if not self.limit:
            return
        entries = self.entries
        entries[saga_id] = (index, state)
        entries.move_to_end(saga_id)
        if len(entries) > self.limit:
            entries.popitem(last=False)
