"""Indexes: the rows derived from saga state, kept locally per partition, without changelogs.

The ``sagas`` table is the only state with a changelog. Summary rows (list and stats
queries), the pending index (running sagas by type, step and since when) and the
deadline index (ordered by due time, what the sweeper reads) are functions of it, so
each worker keeps them in a local RocksDB per partition it owns as active and builds
them from that partition of ``sagas`` when it becomes active here. That is one changelog
write per change instead of four, and a quarter of the records to read on recovery.

An index is written only by the track processor (``Tracking``, in the ingest or the track
agent), synchronously with the saga's own row (no await between them), so
both stay in step within a process. Anything else that changes a partition's saga state
goes through faust applying changelog records (a recovery after a rebalance, a standby):
that invalidates the partition's index, and so does the partition leaving. Across
restarts an index is rebuilt, never trusted. A build runs in chunks (the event loop keeps
serving) and starts over when partitions move while it runs.

**Placed, not written per event** (``Index.changed``, ``Index.place``): a saga the track
processor changes is noted (``Changed``: where it stood when its rows were last written, and its
newest state), and its summary row, index rows and census counts are made once, for its newest
state, when the index is next read (every read places first: the sweeper each
``SAGA_TRACKER_SWEEP_INTERVAL``, the API, a scrape, the census) or when ``PLACE_AFTER`` sagas
wait. A saga that changes several times in between is summarized once, not once per event, and
the stored row's head is made from the same summary (``Changed.encode``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import rocksdict

from tables import rows as saga_rows
from tables import unlogged
from tracker.core.census import Census, Key, key_of
from tracker.core.definitions import Catalog, SagaDefinition
from tracker.core.flow import Mark, figures, marks
from tracker.core.state import TERMINAL, SagaState
from tracker.core.summaries import placement, summary
from tracker.ops.metrics import Metrics

log = logging.getLogger(__name__)

SUMMARY, PENDING, DEADLINE = b"s", b"p", b"d"  # key prefixes of the three indexes in one RocksDB
CHUNK = 2000  # sagas indexed between yields to the event loop during a rebuild
FAUST_KEYS = b"__faust"  # faust's own bookkeeping rows in a table's RocksDB (offsets)

# A partition's (saga id, state) rows in key order from a key (b"": all), None if not open here.
Rows = Callable[[int, bytes], Iterable[tuple[bytes, bytes]] | None]


class Abandoned(Exception):
    """A rebuild overtaken by a rebalance."""


def deadline_key(due: float, saga_id: str) -> bytes:
    # Rounded up, and "now" rounded down: a deadline is never swept before it is due.
    return f"{math.ceil(due * 1000):015d}|{saga_id}".encode()


def due_bound(now: float) -> bytes:
    """Every deadline key due at or before ``now`` sorts before this key."""
    return f"{math.floor(now * 1000):015d}}}".encode()  # '}' sorts after '|'


def after(prefix: bytes) -> bytes:
    """The first key past every key that starts with ``prefix`` (not all 0xff bytes)."""
    stem = prefix.rstrip(b"\xff")
    return stem[:-1] + bytes([stem[-1] + 1])


def pending_prefix(saga_type: str, step: str) -> bytes:
    return f"{saga_type}|{step}|".encode()


def pending_key(row: dict[str, Any]) -> bytes | None:
    """The pending-index key of a summary row, or None when the saga waits on no step."""
    if row["status"] != "running" or not row["current_step"] or row["pending_since"] is None:
        return None
    since = round(row["pending_since"] * 1000)
    return pending_prefix(row["saga_type"], row["current_step"]) + f"{since:015d}|{row['saga_id']}".encode()


def deadline_row(row: dict[str, Any], token: str) -> dict[str, Any]:
    """The deadline index row of a saga with a deadline (``row``: its summary, ``token``: its
    deadline's)."""
    return {
        "token": token,
        "saga_id": row["saga_id"],
        "saga_type": row["saga_type"],
        "due": row["deadline"],
        "step": row["current_step"] or row["status"],
    }


def keys_of(state: SagaState, placed: dict[str, Any]) -> list[bytes]:
    """The keys of a saga's index rows (``placed``: its ``placement`` or summary); what
    ``rows_of`` writes, without building the rows."""
    keys = [SUMMARY + state.saga_id.encode()]
    if (pending := pending_key(placed)) is not None:
        keys.append(PENDING + pending)
    if state.deadline is not None:
        keys.append(DEADLINE + deadline_key(state.deadline.due, state.saga_id))
    return keys


def rows_of(state: SagaState, row: dict[str, Any]) -> dict[bytes, bytes]:
    """Every index row of one saga (``row``: its summary), by key."""
    return index_rows(row, orjson.dumps(row), state.deadline.token if state.deadline is not None else None)


def index_rows(row: dict[str, Any], summary_json: bytes, token: str | None) -> dict[bytes, bytes]:
    """Every index row of one saga, from its summary (``row``, and as JSON) and its deadline's
    token (None: no deadline; the summary's ``deadline`` is its due time)."""
    saga_id = row["saga_id"]
    out = {SUMMARY + saga_id.encode(): summary_json}
    pending = pending_key(row)
    if pending is not None:
        out[PENDING + pending] = b""
    if token is not None:
        out[DEADLINE + deadline_key(row["deadline"], saga_id)] = orjson.dumps(deadline_row(row, token))
    return out


NO_DEADLINE = "-"


def head(definition: SagaDefinition, state: SagaState, summary_json: bytes) -> bytes:
    """The head of the saga's stored row (``tables.rows``): the definition's fingerprint, the
    deadline's token and the summary row (``summary_json``), space-separated: all an index
    rebuild needs to write the saga's index rows and count it, without decoding its state."""
    token = state.deadline.token if state.deadline is not None else NO_DEADLINE
    if " " in token or "\n" in token:  # never so in a token the machine makes: the row is decoded instead
        return b""
    return b" ".join((definition.fingerprint.encode(), token.encode(), summary_json))


class Changed:
    """A saga changed since its index rows were last written: what they were made from (``was``,
    under ``was_definition``; None for a new saga) and its newest state. Also what the state cache
    stores for it (``encode``: the row with its head), so the summary is made once for both."""

    __slots__ = ("_json", "_row", "definition", "state", "was", "was_definition")

    def __init__(self, definition: SagaDefinition, was: SagaState | None, state: SagaState) -> None:
        self.was_definition, self.was, self.definition, self.state = definition, was, definition, state
        self._row: dict[str, Any] | None = None
        self._json: bytes | None = None

    def moved_on(self, definition: SagaDefinition, state: SagaState) -> None:
        self.definition, self.state, self._row, self._json = definition, state, None, None

    def placed(self) -> None:
        """Its rows are made. The state cache keeps this object until its flush, which needs only
        the summary's JSON (``encode``): what the rows before were made from (``was``, a second
        decoded state of ~10 KB) and the summary row's dicts go. Each held container is also one
        more object every collection of the heap's young generation walks (bench/README.md)."""
        self.was = self._row = None

    def summary(self) -> tuple[dict[str, Any], bytes]:
        """The newest state's summary row, and as JSON."""
        if self._row is None or self._json is None:
            row = summary(self.definition, self.state)
            self._row, self._json = row, orjson.dumps(row)
        return self._row, self._json

    def summary_json(self) -> bytes:
        """The newest state's summary row as JSON, made once."""
        return self._json if self._json is not None else self.summary()[1]

    def rows(self) -> dict[bytes, bytes]:
        """Every index row of the newest state (``rows_of``)."""
        row, summary_json = self.summary()
        return index_rows(row, summary_json, self.state.deadline.token if self.state.deadline is not None else None)

    def encode(self) -> bytes:
        """The newest state's stored row, with its head (``stored_row``)."""
        return saga_rows.encode(self.state, head(self.definition, self.state, self.summary_json()))


def stored_row(definition: SagaDefinition, state: SagaState) -> bytes:
    """The row the track processor stores for ``state`` (its head, then the state)."""
    return Changed(definition, None, state).encode()


def options(cache: rocksdict.Cache) -> rocksdict.Options:
    # Small and bounded: an index is rebuilt rather than recovered, so it needs no WAL either.
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_write_buffer_size(4 << 20)
    opts.set_max_write_buffer_number(2)
    table = rocksdict.BlockBasedOptions()
    table.set_block_cache(cache)
    opts.set_block_based_table_factory(table)
    return opts


class Index:
    """One partition's indexes.

    The sagas changed since the last ``place`` wait in ``changed`` (see the module's doc); their
    rows, once made, are held (``pending``, newest per key) and written to RocksDB as one batch
    when ``PENDING_ROWS`` have gathered or before anything reads the index: one write per few
    hundred rows, and every read still sees every change. Held sagas and rows are lost with the
    process, as unflushed RocksDB writes without a WAL would be: an index is rebuilt from the saga
    rows whenever a worker starts. ``census``: counted in at ``place`` as ``partition``."""

    PENDING_ROWS = 512
    PLACE_AFTER = 4096  # sagas changed and not yet placed

    def __init__(self, db: rocksdict.Rdict, *, census: Census | None = None, partition: int = 0) -> None:
        self.db, self.census, self.partition = db, census, partition
        self.unwritten = unlogged()  # rebuilt, never recovered: no WAL either
        self.pending: dict[bytes, bytes | None] = {}  # key -> row, or None: deleted
        self.waiting: dict[str, Changed] = {}  # saga id -> its change, until ``place``

    def changed(self, definition: SagaDefinition, was: SagaState | None, state: SagaState) -> Changed:
        """Note that the saga moved from ``was`` (None: new) to ``state``; its rows and census
        counts follow at the next ``place``. Returns what the state cache stores for it."""
        found = self.waiting.get(state.saga_id)
        if found is not None:  # ``was`` is what its placed rows were made from: kept
            found.moved_on(definition, state)
            return found
        found = self.waiting[state.saga_id] = Changed(definition, was, state)
        if len(self.waiting) >= self.PLACE_AFTER:
            self.place()
        return found

    def place(self) -> None:
        """Make the rows and census counts of every saga changed since the last call, from its
        newest state: its old rows (made from ``was``) replaced, its census marks moved."""
        if not self.waiting:
            return
        waiting, self.waiting = self.waiting, {}
        census, partition = self.census, self.partition
        for change in waiting.values():
            old = change.was
            placed = placement(change.was_definition, old) if old is not None else None
            new_rows = change.rows()
            self.change(keys_of(old, placed) if old is not None and placed is not None else (), new_rows)
            if census is not None:
                census.change(partition, placed, change.summary()[0])
            change.placed()

    def write(self, puts: dict[bytes, bytes], deletes: Iterable[bytes] = ()) -> None:
        """Write now, with whatever is held: one batch."""
        self.change(deletes, puts)
        self.flush()

    def change(self, old: Iterable[bytes], new: dict[bytes, bytes]) -> None:
        """Replace a saga's rows: ``old`` their keys before (``keys_of``), ``new`` the rows after (``rows_of``)."""
        pending = self.pending
        for key in old:
            if key not in new:
                pending[key] = None
        pending.update(new)
        if len(pending) >= self.PENDING_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the held rows, one batch."""
        if not self.pending:
            return
        pending, self.pending = self.pending, {}
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in pending.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self.db.write(batch, self.unwritten)

    def drop_deadline(self, key: bytes) -> None:
        self.pending[DEADLINE + key] = None

    def scan(self, prefix: bytes, until: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Rows under ``prefix`` in key order (keys without the prefix), those before ``prefix +
        until`` only when ``until`` is given.

        Bounded in RocksDB too (``iterate_upper_bound``): every change deletes a saga's old pending
        and deadline rows, and an iterator steps over each deleted key in its way until compaction
        drops it. Most deleted deadlines were due later than now (a step done before its
        deadline): without the bound, the sweep's scan for what is due walked all of them
        (measured: 8.5 ms for 200,000 deleted keys, 0.01 ms bounded)."""
        self.place()
        self.flush()
        bounded = rocksdict.ReadOptions()
        bounded.set_iterate_upper_bound(prefix + until if until else after(prefix))
        key: Any
        for key, value in self.db.items(from_key=prefix, read_opt=bounded):
            yield key[len(prefix) :], value

    def summaries(self) -> Iterator[dict[str, Any]]:
        for _, value in self.scan(SUMMARY):
            yield orjson.loads(value)

    def summary(self, saga_id: str) -> dict[str, Any] | None:
        self.place()
        key = SUMMARY + saga_id.encode()
        raw = self.pending[key] if key in self.pending else self.db.get(key)
        return None if raw is None else orjson.loads(raw)

    def due(self, bound: bytes) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """Deadline rows due before ``bound`` (see ``due_bound``), oldest first."""
        for key, value in self.scan(DEADLINE, until=bound):
            yield key, orjson.loads(value)

    def oldest_pending(self, prefix: bytes) -> float | None:
        """When the oldest saga still pending under ``pending_prefix(...)`` started waiting (epoch s)."""
        for key, _ in self.scan(PENDING + prefix):  # key: "<since ms>|<saga id>"
            return int(key.split(b"|", 1)[0]) / 1000
        return None


class Indexes:
    def __init__(self, root: Path, catalog: Catalog, rows: Rows, census: Census, metrics: Metrics) -> None:
        """``rows``: a partition's saga rows (its ``sagas`` store), None when it is not open here."""
        self.root, self.catalog, self.rows, self.census, self.metrics = root, catalog, rows, census, metrics
        self.cache = rocksdict.Cache(16 << 20)  # shared by every partition's index
        self.built: dict[int, Index] = {}
        self.building: dict[int, asyncio.Task[Index | None]] = {}
        self.epoch = 0  # bumped when partitions move: what was built before may be stale
        self.unindexed: set[str] = set()  # saga types with no definition any more, logged once

    def moved(self) -> None:
        """Partitions are moving: builds under way start over. A built index stays: it is
        dropped when its partition is no longer active here, or when the changelog changes
        its saga state (``invalidate``), so a partition that stays is not rebuilt."""
        self.epoch += 1
        for task in self.building.values():
            task.cancel()
        self.building.clear()

    def invalidate(self, partitions: Iterable[int]) -> None:
        """Saga state of these partitions changed behind the track agent's back (changelog
        records applied by a recovery or a standby): their indexes must be rebuilt."""
        for partition in set(partitions):
            if (task := self.building.pop(partition, None)) is not None:
                self.epoch += 1  # a build under way read state that is now old
                task.cancel()
            if (index := self.built.pop(partition, None)) is not None:
                index.db.close()

    async def refresh(self, active: Iterable[int]) -> None:
        """Index the partitions active here that are not yet (and count their sagas); drop
        the indexes and census of those that left. Call only when no changelog is recovering."""
        active = list(active)
        self.invalidate(set(self.built) - set(active))
        for partition in active:
            await self.ready(partition)
        for partition in set(self.census.partitions) - set(active):
            self.census.forget(partition)

    def place(self) -> None:
        """Place every index's changed sagas (``Index.place``): before the census is read."""
        for index in self.built.values():
            index.place()

    def cached(self, partition: int) -> Index | None:
        return self.built.get(partition)

    async def ready(self, partition: int) -> Index | None:
        """The partition's index, rebuilt first if partitions moved since; None if the
        partition's saga state is not open here."""
        while (index := self.built.get(partition)) is None:
            task = self.building.get(partition)
            if task is None:
                task = self.building[partition] = asyncio.ensure_future(self._build(partition, self.epoch))
            try:
                index = await asyncio.shield(task)
            except (Abandoned, asyncio.CancelledError):
                if task.cancelled() or task.done():
                    continue  # partitions moved while it ran: build again for the new assignment
                raise  # the caller itself was cancelled
            if index is None:
                return None
        return index

    async def _build(self, partition: int, epoch: int) -> Index | None:
        """Index a partition's sagas, a chunk at a time; each chunk is a fresh read from the
        saga store (the store may close while the loop serves others in between)."""
        index: Index | None = None
        counts: Counter[Key] = Counter()
        flows: Counter[Mark] = Counter()
        start, began, sagas = b"", time.perf_counter(), 0
        try:
            while True:
                if epoch != self.epoch:
                    raise Abandoned
                rows = self.rows(partition, start)
                if rows is None:
                    if index is not None:
                        index.db.close()
                    return None
                if index is None:
                    path = self.root / str(partition)
                    shutil.rmtree(path, ignore_errors=True)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    index = Index(rocksdict.Rdict(str(path), options(self.cache)), census=self.census, partition=partition)
                batch: dict[bytes, bytes] = {}
                n = 0
                for key, value in rows:
                    if (start and key == start) or key.startswith(FAUST_KEYS):
                        continue  # from_key is inclusive; faust's offsets are not sagas
                    start, n, sagas = key, n + 1, sagas + 1
                    try:
                        found = self.rows_of(value)
                    except Exception:  # one undecodable saga must not leave the partition unindexed
                        log.exception("cannot index saga %r of partition %d", key[:200], partition)
                        self.metrics.processing_errors.labels("index").inc()
                        continue
                    if found is not None:
                        if (k := key_of(found[0])) is not None:
                            counts[k] += 1
                        flows.update(marks(found[0]))
                        batch.update(found[1])
                    if n == CHUNK:
                        break
                index.write(batch)
                if n < CHUNK:
                    break
                await asyncio.sleep(0)
            if epoch != self.epoch:
                raise Abandoned
            self.census.rebuild(partition, counts, flows)
            self.built[partition] = index
            took = time.perf_counter() - began
            self.metrics.index_rebuild_duration.observe(took)
            log.info("indexed partition %d: %d sagas in %.1fs", partition, sagas, took)
            return index
        except BaseException:
            if index is not None:
                index.db.close()
            raise
        finally:
            if self.building.get(partition) is asyncio.current_task():
                del self.building[partition]

    def rows_of(self, value: bytes) -> tuple[dict[str, Any], dict[bytes, bytes]] | None:
        """A stored saga's placement (census and flow fields) and index rows; None when its type
        has no definition. Read from the row's head when it has one made under the saga's
        definition as it is now, else from its decoded state."""
        found = self.from_head(saga_rows.split(value)[0])
        if found is not None:
            return found
        state = saga_rows.decode(value)
        definition = self.catalog.definition(state.saga_type, state.version)
        if definition is None:
            if state.saga_type not in self.unindexed:
                self.unindexed.add(state.saga_type)
                log.warning("saga type %r has no definition any more: its sagas are not indexed", state.saga_type)
            return None
        row = summary(definition, state)
        return row, rows_of(state, row)

    def from_head(self, head: bytes) -> tuple[dict[str, Any], dict[bytes, bytes]] | None:
        """``rows_of`` from a row's head; None when there is none, it is not readable, or its
        definition has changed or gone (the state is decoded instead)."""
        if not head:
            return None
        try:
            mark, token, summary_json = head.split(b" ", 2)
            row = orjson.loads(summary_json)
            definition = self.catalog.definition(row["saga_type"], row["version"])
            if definition is None or mark.decode() != definition.fingerprint:
                return None
            return row, index_rows(row, summary_json, None if token == NO_DEADLINE.encode() else token.decode())
        except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
            return None

    def stats(self, partitions: Iterable[int], now: float) -> dict[str, Any]:
        """This worker's part of ``/sagas/stats`` for ``partitions`` (those indexed here):
        census counters, plus a read of the sagas past their deadline and of the longest
        pending per step. Nothing reads every saga."""
        built = [(p, index) for p in partitions if (index := self.built.get(p)) is not None]
        for _, index in built:
            index.place()  # the census counts placed sagas
        counts = self.census.marks(p for p, _ in built)
        bound, overdue, oldest = due_bound(now), [], {}
        for _, index in built:
            for _, row in index.due(bound):
                found = index.summary(row["saga_id"])
                if found is not None and found["status"] not in TERMINAL:
                    overdue.append(found)
        for what, saga_type, step, _ in counts:
            if what != "pending":
                continue
            since = [s for _, index in built if (s := index.oldest_pending(pending_prefix(saga_type, step))) is not None]
            if since:
                oldest[(saga_type, step)] = min(since)
        steps = {name: d.step_names for name, d in self.catalog.current.items()}
        return figures(steps, counts, overdue, oldest, now)

    def close(self) -> None:
        self.moved()
        self.invalidate(list(self.built))
