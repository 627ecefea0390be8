"""The index rows: a deadline is swept only once it is due, never before; a saga's old
rows are named without building them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as hs

from tests.unit.sagas import COMPLETIONS, Saga, ev, order_saga
from tracker.core.state import SagaState
from tracker.core.summaries import placement, summary
from tracker.stream.indexes import DEADLINE, PENDING, SUMMARY, deadline_key, due_bound, keys_of, rows_of

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
