"""Processes: how the commands that start children stop them, whatever stops the parent.

SIGTERM is how Kubernetes, systemd, ``docker stop`` and supervisors stop a process; Python's
default for it ends the process at once, without running ``finally`` blocks, so children
(the embedded broker, the demo's worker) were left running with parent 1. ``stopping_on``
turns SIGTERM (and SIGINT) into ``KeyboardInterrupt`` in the main thread, so every ``with``
and ``finally`` that stops a child runs. ``with_parent`` is the ``preexec_fn`` of every child:
Linux delivers it SIGTERM when its parent dies, however it dies (SIGKILL included).

An exception raised from a signal handler lands between any two bytecodes, and inside asyncio's
own set-up that leaves a half-built event loop (its ``__del__`` then prints a traceback) and a
main coroutine never awaited. So a command runs its coroutines with ``run``: while one runs, a
stop signal cancels it instead, its ``finally`` blocks await what they need, and
``KeyboardInterrupt`` is raised once the loop has closed.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import signal
import sys
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

PR_SET_PDEATHSIG = 1  # linux/prctl.h
T = TypeVar("T")


@dataclass
class _Running:
    """The coroutine ``run`` is running; Python runs signal handlers in the main thread only, as
    it runs ``run``, so this needs no lock."""

    active: bool = False
    stop: str | None = None  # the signal that stopped it
    task: asyncio.Task[Any] | None = None


_RUNNING = _Running()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if not _RUNNING.active:
        raise KeyboardInterrupt(name)
    _RUNNING.stop = _RUNNING.stop or name
    if _RUNNING.task is not None:
        # threadsafe: it also wakes a loop that is waiting in select(), which the signal only
        # interrupted for Python to retry it
        _RUNNING.task.get_loop().call_soon_threadsafe(_RUNNING.task.cancel)


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, stopped by ``stopping_on``'s signals through cancellation; a stop
    raises ``KeyboardInterrupt`` after the loop has closed (also when ``main`` swallowed it)."""

    outcome: list[T] = []

    async def guarded() -> None:
        _RUNNING.task = asyncio.current_task()
        try:
            if _RUNNING.stop is not None:  # it came while asyncio was setting up
                main.close()
                return
            outcome.append(await main)
        except asyncio.CancelledError:
            if _RUNNING.stop is None:
                raise
        finally:
            _RUNNING.task = None

    _RUNNING.active, _RUNNING.stop = True, None
    try:
        asyncio.run(guarded())
    finally:
        _RUNNING.active = False
    if _RUNNING.stop is not None:
        raise KeyboardInterrupt(_RUNNING.stop)
    return outcome[0]


@contextmanager
def stopping_on(*signals: signal.Signals) -> Iterator[None]:
    """Within the block, each of ``signals`` (default SIGTERM and SIGINT) raises
    ``KeyboardInterrupt`` in the main thread (inside ``run``, once its loop has closed); the
    previous handlers are restored after."""
    wanted = signals or (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, _interrupt) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def with_parent() -> None:
    """``preexec_fn`` of a child process: it gets SIGTERM when its parent dies (Linux only; elsewhere
    the parent's ``finally`` blocks are all there is)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
