"""The tracker's changelog-backed RocksDB tables, declared in one place.

Both are co-partitioned with the saga log (same partition count, key = saga id for
``sagas``; the deadline index row lives in the partition of the saga it belongs to).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TableT

from tracker.settings import Settings


@dataclass(frozen=True)
class Tables:
    sagas: TableT  # saga id -> JSON saga state
    summaries: TableT  # saga id -> JSON summary row, what list and stats queries scan
    pending: TableT  # "<type>|<step>|<since ms>|<saga id>" -> b"": running sagas ordered by pending-since, per step
    deadlines: TableT  # "<due ms, 15 digits>|<saga id>" -> JSON {token, saga_type}: ordered by due time


def declare(app: faust.App, settings: Settings) -> Tables:
    def table(name: str, help: str) -> TableT:
        # key_type/value_type bytes is what makes faust pick the raw serializer for tables.
        return app.Table(name, partitions=settings.partitions, key_type=bytes, value_type=bytes, help=help)

    return Tables(
        sagas=table("sagas", "Saga state by saga id."),
        summaries=table("summaries", "Saga summary rows by saga id (list and stats queries)."),
        pending=table("pending", "Running sagas by type, pending step and since when (oldest-age gauges)."),
        deadlines=table("deadlines", "Pending deadlines ordered by due time."),
    )


def partition_db(table: TableT, partition: int) -> Any | None:
    """The RocksDB (rocksdict) of one partition of a table, keys in order; None if not open here.

    faust has no public API for one partition's store: this is the single place that reaches in.
    """
    store: Any = table.data
    return store._dbs.get(partition)


def deadline_key(due: float, saga_id: str) -> bytes:
    # Rounded up, and "now" rounded down: a deadline is never swept before it is due.
    return f"{math.ceil(due * 1000):015d}|{saga_id}".encode()


def due_bound(now: float) -> bytes:
    """Every deadline key due at or before ``now`` sorts before this key."""
    return f"{math.floor(now * 1000):015d}}}".encode()  # '}' sorts after '|'


def pending_prefix(saga_type: str, step: str) -> bytes:
    return f"{saga_type}|{step}|".encode()


def pending_key(summary: dict[str, Any]) -> bytes | None:
    """The pending-index key of a summary row, or None when the saga waits on no step."""
    if summary["status"] != "running" or not summary["current_step"] or summary["pending_since"] is None:
        return None
    since = round(summary["pending_since"] * 1000)
    return pending_prefix(summary["saga_type"], summary["current_step"]) + f"{since:015d}|{summary['saga_id']}".encode()
