"""The tracker's changelog-backed RocksDB tables, declared in one place.

Both are co-partitioned with the saga log (same partition count, key = saga id for
``sagas``; the deadline index row lives in the partition of the saga it belongs to).
"""

from __future__ import annotations

from dataclasses import dataclass

import faust

from tracker.settings import Settings


@dataclass(frozen=True)
class Tables:
    sagas: faust.Table  # saga id -> JSON saga state
    deadlines: faust.Table  # "<due ms, 15 digits>|<saga id>" -> JSON {token, saga_type}: ordered by due time


def declare(app: faust.App, settings: Settings) -> Tables:
    # key_type/value_type bytes is what makes faust pick the raw serializer for tables.
    common = {"partitions": settings.partitions, "default": None, "key_type": bytes, "value_type": bytes}
    return Tables(
        sagas=app.Table("sagas", help="Saga state by saga id.", **common),
        deadlines=app.Table("deadlines", help="Pending deadlines ordered by due time.", **common),
    )


def deadline_key(due: float, saga_id: str) -> bytes:
    return f"{round(due * 1000):015d}|{saga_id}".encode()


def due_bound(now: float) -> bytes:
    """Every deadline key due at or before ``now`` sorts before this key."""
    return f"{round(now * 1000):015d}}}".encode()  # '}' sorts after '|'
