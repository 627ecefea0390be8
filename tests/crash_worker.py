"""A tracker worker with the crash hook installed, for the fault-injection tests only.

``python -m tests.crash_worker`` runs ``saga-tracker worker`` with a ``SendHooks`` that exits
the process abruptly around the first compensation send, once: ``CRASH_POINT`` is
``before_send`` (the decision is in the state, nothing sent) or ``after_send`` (the records
are on the broker, the input not committed); ``CRASH_MARKER`` is the file that records the
crash so a restarted worker does not crash again. Production code has no such hook.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from tracker.ops.settings import Settings
from tracker.worker import run

log = logging.getLogger(__name__)
POINTS = ("before_send", "after_send")


class Crash:
    def __init__(self, point: str, marker: str) -> None:
        if point not in POINTS or not marker:
            raise SystemExit(f"CRASH_POINT must be one of {POINTS} and CRASH_MARKER a file path")
        self.point, self.marker = point, marker

    def _armed(self, point: str) -> bool:
        return self.point == point and not os.path.exists(self.marker)

    def _crash(self) -> None:
        with open(self.marker, "w") as f:
            f.write(self.point)
        log.error("injected crash at %s", self.point)
        os._exit(137)

    async def before_send(self) -> None:
        if self._armed("before_send"):
            self._crash()

    async def after_send(self, delivered: list[Any]) -> None:
        if self._armed("after_send"):
            # The emitted records are on the broker (faust's producer.flush() does not return
            # when awaited from inside an agent).
            await asyncio.wait_for(asyncio.gather(*[d for d in delivered if d is not None]), timeout=30)
            self._crash()


if __name__ == "__main__":
    run(Settings.from_env(), hooks=Crash(os.environ.get("CRASH_POINT", ""), os.environ.get("CRASH_MARKER", "")))
