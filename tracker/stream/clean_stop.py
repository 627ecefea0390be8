"""The clean stop: whether a worker may trust its local saga stores when it starts.

A saga's row is stored before its changelog record is answered by the broker (decide, record,
then send; the state cache's flush stores every row, then hands their records over). A worker
that dies in between leaves rows in its local store that the changelog lacks. Restarted on that
store, it reads the uncommitted input again, finds each saga already past it (a duplicate:
nothing to write) and commits: the changelog never gets those rows, and a worker that later
restores the partition from the changelog has lost them (a saga missing, or its decisions: found
by the fault harness, *SIGKILL a random worker*; ``tests/integration/test_stalls.py``).

So the stores are trusted only after a **clean stop**: faust's stop finished and every row
stored had its changelog record answered. The stop then writes a marker beside the stores; the
next start removes it, and without it removes the stores before faust opens them, so the
partitions are restored from their changelogs (Kafka Streams wipes a task's stores after an
unclean stop under exactly-once, for the same reason). A crash, ``exit_to_restart``, a kill or a
stop that overran its bound costs one restore of this worker's partitions, never a row.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from tables import partition_stores

log = logging.getLogger(__name__)


class CleanStop:
    def __init__(self, tabledir: Path, table: str) -> None:
        """``tabledir``: faust's table directory; ``table``: the table whose stores are judged."""
        self.marker = tabledir / f".{table}.clean-stop"
        self.tabledir, self.table = tabledir, table

    def begin(self) -> list[Path]:
        """At start, before faust opens a store: remove the stores unless the last stop was clean
        (and the marker either way: this run's stop decides again). Returns what it removed."""
        clean = self.marker.exists()
        self.marker.unlink(missing_ok=True)
        stores = partition_stores(self.tabledir, self.table)
        if clean or not stores:
            return []
        for path in stores:
            shutil.rmtree(path)  # an error is the worker's to fail on: a kept store may lose rows
        log.warning(
            "the last stop of this worker was not clean (killed, crashed or exited to restart): its rows "
            "may be ahead of the changelog, so its %d %s stores were removed and are restored from the changelog",
            len(stores),
            self.table,
        )
        return stores

    def end(self, unconfirmed: int) -> bool:
        """At the end of a stop that finished: ``unconfirmed`` rows stored with no answer for their
        changelog records. Writes the marker only when there are none; returns whether it did."""
        if unconfirmed:
            log.warning("%d stored rows have no changelog record answered: the next start restores the stores", unconfirmed)
            return False
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.marker.write_text("every stored row was in the changelog when this worker stopped\n")
        return True
