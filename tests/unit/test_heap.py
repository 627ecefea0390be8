"""The worker's collector settings (``tracker.ops.heap``): start-up heap frozen, young scans rarer."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from tracker.ops import heap


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    gc.disable()  # no automatic collection inside a test: what it shows is ``tune``'s doing
    yield
    gc.enable()
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored")
def test_tune_freezes_what_is_alive_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    made_at_start_up: list[list[int]] = [[] for _ in range(10)]
    _, older, oldest = gc.get_threshold()
    heap.tune(20000)
    assert gc.get_freeze_count() >= len(made_at_start_up)
    assert gc.get_threshold() == (20000, older, oldest)
    # Frozen objects are out of every scan: the collector's generations no longer hold them.
    assert not any(o is made_at_start_up for o in gc.get_objects())


@pytest.mark.usefixtures("restored")
def test_tune_frees_start_up_cycles_instead_of_freezing_them() -> None:
    gc.unfreeze()

    class Node:
        other: object

    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    heap.tune(20000)
    assert gone() is None


@pytest.mark.usefixtures("restored")
def test_zero_leaves_pythons_defaults() -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    heap.tune(0)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
