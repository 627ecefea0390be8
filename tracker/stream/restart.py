"""The one way a worker exits to be restarted.

A worker that can no longer keep its guarantees (a changelog record the broker refused, a
producer or consumer that stopped moving, a freeze past its session timeout) stops at once,
without committing anything more: its orchestrator restarts it (Kubernetes, the demo's and
the fault harness's supervisors), and it resumes from the committed offsets, at least once.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

log = logging.getLogger(__name__)
EXIT_TO_RESTART = 70  # EX_SOFTWARE: the documented code for "restart me"


def exit_to_restart(reason: str) -> NoReturn:
    """Log why and leave the process now. ``os._exit``: no ``finally``, no faust shutdown, no
    commit on the way out; a graceful stop would flush and commit what this worker must not."""
    log.critical("%s; exiting to restart (code %d)", reason, EXIT_TO_RESTART)
    for handler in logging.getLogger().handlers:  # the reason must reach the log before the exit
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_TO_RESTART)
