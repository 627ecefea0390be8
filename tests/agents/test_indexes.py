"""The index rows: a deadline is swept only once it is due, never before; a saga's old
rows are named without building them."""

from __future__ import annotations

import gc
import itertools
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as hs
from prometheus_client import CollectorRegistry

from tables import rows
from tests.unit.sagas import COMPLETIONS, Saga, ev, order_saga
from tracker.core.census import Census
from tracker.core.definitions import SagaDefinition
from tracker.core.state import SagaState
from tracker.core.summaries import placement, summary
from tracker.ops.metrics import Metrics
from tracker.stream.indexes import (
    DEADLINE,
    PENDING,
    SUMMARY,
    Indexes,
    deadline_key,
    due_bound,
    keys_of,
    rows_of,
    stored_row,
)

times = hs.floats(min_value=1e9, max_value=4e9, allow_nan=False)


@given(due=times, now=times, saga_id=hs.text(min_size=1, max_size=30))
def test_a_deadline_is_in_the_sweep_only_when_due(due: float, now: float, saga_id: str) -> None:
    if deadline_key(due, saga_id) < due_bound(now):
        assert now >= due
    if now >= due + 0.001:  # due (to the millisecond): it is swept
        assert deadline_key(due, saga_id) < due_bound(now)


@given(a=times, b=times)
def test_keys_sort_by_due_time(a: float, b: float) -> None:
    if a + 0.001 < b:
        assert deadline_key(a, "x") < deadline_key(b, "x")


def _states() -> list[SagaState]:
    """A happy saga, one that times out and compensates, one waiting for its start."""
    happy, stalled, early = Saga(), Saga(), Saga()
    for i, event_type in enumerate(COMPLETIONS):
        happy(ev(event_type, 100.0 + i))
    stalled(ev("OrderCreated", 100.0))
    stalled.fire()
    stalled(ev("OrderCancelled", 200.0))
    early(ev("PaymentAuthorized", 100.0))
    return [t.state for s in (happy, stalled, early) for t in s.transitions if t.state is not None]


def test_keys_of_names_every_row_rows_of_writes() -> None:
    # The track agent deletes a saga's old rows by these keys: a key missed here is a stale
    # pending or deadline row that stays in the index.
    d, prefixes = order_saga(), set[bytes]()
    for state in _states():
        keys = keys_of(state, placement(d, state))
        assert keys == list(rows_of(state, summary(d, state)))
        prefixes.update(key[:1] for key in keys)
    assert prefixes == {SUMMARY, PENDING, DEADLINE}


def test_held_rows_are_read_as_written_and_written_in_one_batch(tmp_path: Path) -> None:
    """A saga's changes are held and written a few hundred at a time; every read sees them, in
    order, deletes included."""
    import rocksdict

    from tracker.stream.indexes import Index, options

    definition = order_saga()
    states = _states()
    waiting = next(s for s in states if s.deadline is not None)  # a step pending, its deadline set
    done = next(s for s in states if s.deadline is None)  # the same saga once nothing is pending
    other = replace(waiting, saga_id=waiting.saga_id + "-other")
    assert waiting.deadline is not None and other.deadline is not None
    every = due_bound(4e9)
    index = Index(rocksdict.Rdict(str(tmp_path / "0"), options(rocksdict.Cache(1 << 20))))
    try:
        index.change((), rows_of(waiting, summary(definition, waiting)))
        assert index.db.get(SUMMARY + waiting.saga_id.encode()) is None  # held, not written
        assert index.summary(waiting.saga_id) == summary(definition, waiting)
        assert [key for key, _ in index.due(every)] == [deadline_key(waiting.deadline.due, waiting.saga_id)]
        assert index.pending == {} and index.db.get(SUMMARY + waiting.saga_id.encode()) is not None  # the read wrote it

        index.change(keys_of(waiting, placement(definition, waiting)), rows_of(done, summary(definition, done)))
        assert index.summary(waiting.saga_id) == summary(definition, done)
        assert list(index.due(every)) == []  # its deadline row deleted, held until this read

        index.change((), rows_of(other, summary(definition, other)))
        index.drop_deadline(deadline_key(other.deadline.due, other.saga_id))
        assert list(index.due(every)) == []

        for n in range(Index.PENDING_ROWS):  # enough changes: written without a read
            index.change((), {SUMMARY + f"s-{n}".encode(): b"{}"})
        assert index.pending == {} and index.db.get(SUMMARY + b"s-0") == b"{}"
    finally:
        index.db.close()


def _indexes(d: SagaDefinition) -> Indexes:
    """An ``Indexes`` reading nothing (only its row reading is used here)."""
    catalog: Any = SimpleNamespace(
        definition=lambda saga_type, version: d if (saga_type, version) == (d.name, d.version) else None
    )
    return Indexes(Path("/nonexistent"), catalog, lambda partition, start: None, Census(), Metrics(CollectorRegistry()))


def test_a_rebuild_reads_a_row_s_index_rows_from_its_head_as_from_its_state() -> None:
    """A stored row leads with its head (``tables.rows``): the rebuild takes the saga's summary,
    census marks and index rows from it without decoding the state, and gets what decoding it
    gives; a row without a head (written before heads) is decoded."""
    d = order_saga()
    indexes = _indexes(d)
    for state in _states():
        stored = stored_row(d, state)
        head, _ = rows.split(stored)
        assert head and rows.decode(stored) == state and rows.data(stored) == orjson.loads(rows.encode(state))
        assert indexes.from_head(head) is not None  # the head is what the rebuild reads
        decoded = indexes.rows_of(rows.encode(state))  # no head: decoded
        assert decoded is not None and indexes.rows_of(stored) == decoded
        assert decoded[1] == rows_of(state, summary(d, state))


def test_a_head_made_under_another_definition_or_unreadable_is_not_used() -> None:
    """A summary names steps and statuses as its definition did: after the definition changed
    (same type and version), or from a head it cannot read, the rebuild decodes the state."""
    d = order_saga()
    state = _states()[0]
    stored = stored_row(d, state)
    head, _ = rows.split(stored)
    renamed = replace(d, steps=(replace(d.steps[0], status="AWAITING_ORDER"), *d.steps[1:]))
    assert _indexes(renamed).from_head(head) is None
    assert _indexes(d).from_head(b"0000 1@5 {not json") is None and _indexes(d).from_head(b"one-part") is None
    assert _indexes(renamed).rows_of(stored) == (summary(renamed, state), rows_of(state, summary(renamed, state)))


def held(obj: object) -> list[object]:
    """What ``obj`` refers to, through any tuples."""
    out: list[object] = []
    for x in gc.get_referents(obj):
        out.extend(held(x) if isinstance(x, tuple) else [x])
    return out


def test_changed_sagas_are_placed_once_from_their_newest_state_before_any_read(tmp_path: Path) -> None:
    """A saga changed several times between two reads gets the rows and census counts of its
    newest state, its old rows gone, exactly as writing every change would leave them; every read
    (the rows, a saga's summary, the census through ``Indexes.place``) places first."""
    import rocksdict

    from tracker.core.flow import marks
    from tracker.stream.indexes import Index, options

    d, happy_saga, stalled_saga = order_saga(), Saga(), Saga()
    for i, event_type in enumerate(COMPLETIONS):
        happy_saga(ev(event_type, 100.0 + i))
    happy = [t.state for t in happy_saga.transitions if t.state is not None]
    stalled_saga(ev("OrderCreated", 100.0, saga_id="o-2"))
    stalled = stalled_saga.s
    assert stalled.deadline is not None
    every, census = due_bound(4e9), Census()
    census.rebuild(0, Counter(), Counter())
    index = Index(rocksdict.Rdict(str(tmp_path / "0"), options(rocksdict.Cache(1 << 20))), census=census, partition=0)
    eager = Census()
    eager.rebuild(0, Counter(), Counter())
    try:
        placed = summary(d, happy[0])
        index.write(rows_of(happy[0], placed))  # as placed and written earlier: the saga's first state
        eager.change(0, None, placed)
        census.change(0, None, placed)
        for before, after in itertools.pairwise(happy):  # every change noted, none placed yet
            made = index.changed(d, before, after)  # as the track processor: from the state it loaded
            eager.change(0, summary(d, before), summary(d, after))
        assert list(index.waiting) == [happy[0].saga_id]  # one saga, however many changes
        index.changed(d, None, stalled)
        eager.change(0, None, summary(d, stalled))
        assert index.pending == {}  # nothing made yet: no summary, no rows
        assert made.encode() == stored_row(d, happy[-1])  # the row the state cache writes

        assert made.was is happy[0]  # what its placed rows were made from, until it is placed
        assert index.summary(happy[0].saga_id) == summary(d, happy[-1])  # a read places
        assert index.waiting == {}
        # The state cache holds ``made`` until its flush: placed, it keeps no older state alive and
        # no summary row (dicts the collector would walk; its JSON is kept), and encodes the same row.
        assert made.was is None
        assert [x for x in held(made) if isinstance(x, (dict, SagaState))] == [happy[-1]]
        assert made.encode() == stored_row(d, happy[-1])
        assert [key for key, _ in index.due(every)] == [deadline_key(stalled.deadline.due, "o-2")]  # happy's deadline gone
        assert [key for key, _ in index.scan(PENDING)] == [
            k[1:] for k in rows_of(stalled, summary(d, stalled)) if k[:1] == PENDING
        ]
        assert census.partitions == eager.partitions and census.flows == eager.flows
        assert census.flows[0] == Counter(marks(summary(d, happy[-1]))) + Counter(marks(summary(d, stalled)))
    finally:
        index.db.close()


def test_changed_sagas_are_placed_without_a_read_once_enough_wait(tmp_path: Path) -> None:
    import rocksdict

    from tracker.stream.indexes import Index, options

    d = order_saga()
    saga = Saga()
    saga(ev("OrderCreated", 100.0))
    index = Index(rocksdict.Rdict(str(tmp_path / "0"), options(rocksdict.Cache(1 << 20))))
    try:
        for n in range(Index.PLACE_AFTER - 1):
            index.changed(d, None, replace(saga.s, saga_id=f"s-{n}"))
        assert len(index.waiting) == Index.PLACE_AFTER - 1 and index.db.get(SUMMARY + b"s-0") is None
        index.changed(d, None, replace(saga.s, saga_id="last"))
        assert index.waiting == {}  # placed, and the rows written in batches as they gathered
        written = index.db.get(SUMMARY + b"s-0")
        assert written is not None and orjson.loads(written) == summary(d, replace(saga.s, saga_id="s-0"))
    finally:
        index.db.close()


@given(
    prefix=hs.binary(min_size=1, max_size=4).filter(lambda b: b.strip(b"\xff") != b""),
    rest=hs.binary(max_size=4),
    other=hs.binary(max_size=6),
)
def test_after_a_prefix_comes_past_every_key_under_it_and_no_other(prefix: bytes, rest: bytes, other: bytes) -> None:
    """The upper bound of a prefix scan: every key under the prefix sorts before it, and every key
    between the prefix and it is under the prefix."""
    from tracker.stream.indexes import after

    assert prefix + rest < after(prefix)
    if prefix <= other < after(prefix):
        assert other.startswith(prefix)
