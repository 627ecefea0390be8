"""The tracker's changelog-backed RocksDB tables, declared in one place.

Both are co-partitioned with the saga log (same partition count, key = saga id for
``sagas``; the deadline index row lives in the partition of the saga it belongs to).
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import TableT

from tracker.settings import Settings


@dataclass(frozen=True)
class Tables:
    sagas: TableT  # saga id -> JSON saga state
    summaries: TableT  # saga id -> JSON summary row, what list and stats queries scan
    deadlines: TableT  # "<due ms, 15 digits>|<saga id>" -> JSON {token, saga_type}: ordered by due time


def declare(app: faust.App, settings: Settings) -> Tables:
    def table(name: str, help: str) -> TableT:
        # key_type/value_type bytes is what makes faust pick the raw serializer for tables.
        return app.Table(name, partitions=settings.partitions, key_type=bytes, value_type=bytes, help=help)

    return Tables(
        sagas=table("sagas", "Saga state by saga id."),
        summaries=table("summaries", "Saga summary rows by saga id (list and stats queries)."),
        deadlines=table("deadlines", "Pending deadlines ordered by due time."),
    )


def deadline_key(due: float, saga_id: str) -> bytes:
    return f"{round(due * 1000):015d}|{saga_id}".encode()


def due_bound(now: float) -> bytes:
    """Every deadline key due at or before ``now`` sorts before this key."""
    return f"{round(now * 1000):015d}}}".encode()  # '}' sorts after '|'
