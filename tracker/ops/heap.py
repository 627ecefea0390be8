"""The heap: Python's cyclic garbage collector, set for a long-running worker.

CPython frees almost every object of the hot path by reference counting; the collector exists
for cycles, which the per-event code hardly makes. With the default threshold (700 net
allocations) it still scanned the young generation hundreds of times a run, and every few
collections the older ones, walking the whole heap: the modules, faust's services and the
decoded sagas kept between their events (``Hot``). Measured in the worker (bench/README.md,
session 18): ~10 µs of CPU per event went to scans that freed next to nothing.

``tune`` moves everything alive at start-up (modules, definitions, the app) to the permanent
generation, which no collection walks (``gc.freeze``), and raises the young generation's
threshold. Cycles made later are still collected, only in larger steps.

What a young collection costs is the young objects *still alive* when it runs, and every object
they refer to, which it touches (a cache miss each on a heap of hundreds of MB). The decoded
states of the sagas in flight (``tracker.stream.hot``) live for thousands of events: the larger
the threshold, the more of them are gone before a collection, and the fewer collections promote
them to be walked again (bench/README.md has the measurements).
"""

from __future__ import annotations

import gc


def tune(young_objects: int) -> None:
    """Freeze the start-up heap and collect the young generation every ``young_objects`` net
    allocations (0: leave Python's defaults)."""
    if young_objects <= 0:
        return
    gc.collect()  # what start-up left in cycles goes now, not frozen forever
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_objects, older, oldest)
