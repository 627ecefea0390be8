"""Processes: how the commands that start children stop them, whatever stops the parent.

SIGTERM is how Kubernetes, systemd, ``docker stop`` and supervisors stop a process; Python's
default for it ends the process at once, without running ``finally`` blocks, so children
(the embedded broker, the demo's worker) were left running with parent 1. ``stopping_on``
turns SIGTERM (and SIGINT) into ``KeyboardInterrupt`` in the main thread, so every ``with``
and ``finally`` that stops a child runs. ``with_parent`` is the ``preexec_fn`` of every child:
Linux delivers it SIGTERM when its parent dies, however it dies (SIGKILL included).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def stopping_on(*signals: signal.Signals) -> Iterator[None]:
    """Within the block, each of ``signals`` (default SIGTERM and SIGINT) raises
    ``KeyboardInterrupt`` in the main thread; the previous handlers are restored after."""
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
