"""Hot: decoded saga states kept between their events, bounded, and only under their index."""

from __future__ import annotations

from tracker.core.state import SagaState
from tracker.stream.hot import Hot


def saga(n: int) -> SagaState:
    return SagaState(saga_id=f"s-{n}", saga_type="order", version="1")


def test_the_sagas_written_least_recently_leave_first() -> None:
    hot, index = Hot(2), object()
    for n in range(3):
        hot.put(f"s-{n}", index, saga(n))
    newer = saga(1)
    hot.put("s-1", index, newer)  # written again: now the newest
    hot.put("s-3", index, saga(3))
    assert hot.get("s-0", index) is None and hot.get("s-2", index) is None
    assert hot.get("s-1", index) is newer and hot.get("s-3", index) is not None


def test_an_entry_made_under_another_index_of_its_partition_is_a_miss() -> None:
    hot, before, rebuilt = Hot(10), object(), object()
    hot.put("s-0", before, saga(0))
    assert hot.get("s-0", rebuilt) is None and hot.get("s-0", before) is not None


def test_a_limit_of_zero_keeps_nothing() -> None:
    hot, index = Hot(0), object()
    hot.put("s-0", index, saga(0))
    assert hot.get("s-0", index) is None and hot.entries == {}
