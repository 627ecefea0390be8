"""The tracker's changelog-backed RocksDB table, declared in one place.

``sagas`` is co-partitioned with the saga log (same partition count, key = saga id). It is
the only state with a changelog: the rows derived from it (summaries, the pending and
deadline indexes) are local and built from it, see ``tracker.indexes``. The tracker writes
it through ``tracker.changelog`` (row, changelog record, offset), not faust's ``table[key] =``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TableT

from tracker.ops.settings import Settings

# faust's RocksDB defaults are sized for a big machine: per partition store, 64 MB write
# buffers (up to 3) and a 2 GB block cache. Bounded here: a worker owning every partition
# keeps one store per partition (and one per standby), and memory must not grow with them.
STORE_OPTIONS: dict[str, Any] = {
    "write_buffer_size": 8 << 20,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 << 20,
}


@dataclass(frozen=True)
class Tables:
    sagas: TableT  # saga id -> JSON saga state


def declare(app: faust.App, settings: Settings) -> Tables:
    # key_type/value_type bytes is what makes faust pick the raw serializer for tables.
    sagas = app.Table(
        "sagas",
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        options=dict(STORE_OPTIONS),  # faust pops keys from it: a copy
        help="Saga state by saga id.",
    )
    return Tables(sagas=sagas)


def partition_store(table: TableT, partition: int) -> Any | None:
    """One partition's open RocksDB; None if not open here or not a RocksDB store.

    faust has no public API for one partition's store: this is the single place that reaches in.
    """
    dbs = getattr(table.data, "_dbs", None)
    return None if dbs is None else dbs.get(partition)


def partition_items(table: TableT, partition: int, start: bytes = b"") -> Iterable[tuple[bytes, bytes]] | None:
    """One partition's (key, value) rows in key order from ``start``; None if not open here.

    The memory store (agent tests) keeps no partitions: it answers with all its rows.
    """
    store: Any = table.data
    if not hasattr(store, "_dbs"):
        return sorted((k, v) for k, v in store.data.items() if k >= start)
    db = partition_store(table, partition)
    return None if db is None else db.items(from_key=start)


def on_changelog_applied(table: TableT, callback: Callable[[set[int]], None]) -> None:
    """Call ``callback`` with the partitions whose state faust is about to change from the
    changelog (recovery, standby): every write to a table that is not the tracker's own."""
    apply: Any = table.apply_changelog_batch

    def applying(batch: Any) -> None:
        batch = list(batch)
        callback({event.message.partition for event in batch})
        apply(batch)

    table.apply_changelog_batch = applying  # type: ignore[method-assign]
