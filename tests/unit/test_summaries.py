"""List pages are chosen in one pass over a worker's summary rows, holding only a page.

A worker may own a million sagas: ``Query.select`` must not sort (or keep) all of them to
return fifty. Checked against the obvious reference: filter, sort everything, slice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hypothesis import given
from hypothesis import strategies as hs

from tracker.core.summaries import SORTS, Query

rows: hs.SearchStrategy[list[dict[str, Any]]] = hs.lists(
    hs.fixed_dictionaries(
        {
            "saga_id": hs.text("abc", min_size=1, max_size=4),
            "saga_type": hs.sampled_from(["order", "task"]),
            "status": hs.sampled_from(["running", "completed"]),
            "current_step": hs.sampled_from(["payment", None]),
            "updated_at": hs.one_of(hs.none(), hs.integers(0, 5).map(float)),
            "started_at": hs.integers(0, 5).map(float),
            "deadline": hs.none(),
            "keys": hs.just({}),
        }
    ),
    max_size=40,
    unique_by=lambda r: str(r["saga_id"]),
)


def reference(q: Query, all_rows: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    page = [dict(r) for r in all_rows if q.matches(r, now) and q.after_cursor(r)]
    page.sort(key=q.sort_key, reverse=q.descending)
    return page[: q.limit]


@given(rows, hs.sampled_from(SORTS), hs.booleans(), hs.integers(1, 10), hs.sampled_from([None, "running"]), hs.data())
def test_a_page_is_the_first_rows_in_order_after_the_cursor(
    all_rows: list[dict[str, Any]], sort: str, descending: bool, limit: int, status: str | None, data: hs.DataObject
) -> None:
    after = None
    if all_rows and data.draw(hs.booleans()) is True:
        pivot = data.draw(hs.sampled_from(all_rows))
        after = Query(sort=sort).sort_key(pivot)
    q = Query(status=status, sort=sort, descending=descending, limit=limit, after=after)
    consumed: list[int] = []

    def stream() -> Iterator[dict[str, Any]]:  # a generator, as a worker's indexes yield rows
        for r in all_rows:
            consumed.append(1)
            yield r

    assert q.select(stream(), 10.0) == reference(q, all_rows, 10.0)
    assert len(consumed) == len(all_rows)  # one pass
