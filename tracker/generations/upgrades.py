"""Upgrades: what earlier releases left behind that this one no longer uses.

Before the local indexes, the summaries, the pending index and the deadline index were
changelog-backed faust tables of their own. This release rebuilds them from ``sagas`` on
each worker and never reads their stores or changelog topics again. A store is on one
worker's volume, so the worker removes it when it starts. The topics are shared by the
fleet: ``saga-tracker cleanup --delete`` removes them once every worker runs this release
(a worker of the old release still reads and writes them).
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from tables import partition_stores
from tracker.kafka import clients

log = logging.getLogger(__name__)

RETIRED_TABLES = ("summaries", "pending", "deadlines")


def retired_stores(tabledir: Path) -> list[Path]:
    """The retired tables' RocksDB stores (``<table>-<partition>.db``) and backups in faust's table directory."""
    found: list[Path] = []
    for table in RETIRED_TABLES:
        found.extend(partition_stores(tabledir, table))
        found.extend(p for p in [tabledir / f"{table}-backups"] if p.exists())
    return sorted(found)


def remove_retired_stores(tabledir: Path) -> list[Path]:
    """Remove them (a worker at start, before faust opens its stores); returns what it removed.
    Housekeeping: one it cannot remove is logged and left, and the worker starts all the same."""
    removed = []
    for path in retired_stores(tabledir):
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            log.warning("cannot remove %s, a store this release no longer uses: %s", path, exc)
            continue
        log.warning("removed %s: a store of the %s table, which this release no longer has", path, path.name.split("-")[0])
        removed.append(path)
    return removed


def retired_topic(app_id: str) -> re.Pattern[str]:
    """The retired tables' changelog topics of every generation of ``app_id`` (see ``settings.changelog``)."""
    return re.compile(rf"{re.escape(app_id)}(-g[0-9]+)?-({'|'.join(RETIRED_TABLES)})-changelog")


async def retired_topics(bootstrap: str, app_id: str, delete: bool = False) -> list[str]:
    """The retired tables' changelog topics on the broker; with ``delete``, deleted."""
    pattern = retired_topic(app_id)
    admin = clients.admin(bootstrap, purpose="retire")
    await admin.start()
    try:
        found = sorted(t for t in await admin.list_topics() if pattern.fullmatch(t))
        if delete and found:
            await admin.delete_topics(found)
    finally:
        await admin.close()
    return found
