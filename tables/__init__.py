"""The tracker's changelog-backed RocksDB table, declared in one place.

``sagas`` is co-partitioned with the saga log (same partition count, key = saga id). It is
the only state with a changelog: the rows derived from it (summaries, the pending and
deadline indexes) are local and built from it, see ``tracker.indexes``. The tracker writes
it through ``tracker.stream.state_cache`` (row, changelog record, offset), not faust's ``table[key] =``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import rocksdict
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


def unlogged() -> rocksdict.WriteOptions:
    """How the tracker writes to its RocksDB stores: without the write-ahead log. For saga rows
    the changelog is the record (Kafka Streams runs its stores without one too): a store is
    trusted only after a clean stop (``tracker.stream.clean_stop``), which flushes every memtable
    to its files first (``StateCache.persist``); after any other stop it is restored. The local
    indexes are rebuilt at every start."""
    options = rocksdict.WriteOptions()
    options.disable_wal = True  # type: ignore[method-assign,assignment]  # a property; the stub is wrong
    return options


def partition_stores(tabledir: Path, table: str) -> list[Path]:
    """A table's RocksDB stores in faust's table directory: ``<table>-<partition>.db``."""
    return sorted(p for p in tabledir.glob(f"{table}-*.db") if p.name[len(table) + 1 : -3].isdigit())


SAGAS = "sagas"  # the saga state table: its stores and its changelog are named after it


@dataclass(frozen=True)
class Tables:
    sagas: TableT  # saga id -> JSON saga state


def declare(app: faust.App, settings: Settings) -> Tables:
    # key_type/value_type bytes is what makes faust pick the raw serializer for tables.
    sagas = app.Table(
        SAGAS,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        options=dict(STORE_OPTIONS),  # faust pops keys from it: a copy
        help="Saga state by saga id.",
    )
    return Tables(sagas=sagas)
