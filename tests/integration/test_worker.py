"""The worker command: what it sets up around faust before faust takes over."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import Kafka

pytestmark = pytest.mark.integration

# In a process of its own: it sets up logging the way the worker does, for the whole process.
PROBE = """
import logging
import os
import faust
from tracker import worker
from tracker.ops.settings import Settings

started = []
faust.Worker.execute_from_commandline = lambda self: started.append(self)  # everything up to it
worker.run(Settings.from_env())
started[0]._setup_logging()  # what the worker does first when it starts
for name in ("aiokafka.producer.producer", "tracker.stream.tracking"):
    log = logging.getLogger(name)
    # fd 1 itself: the worker's logging setup redirects sys.stdout into the log
    os.write(1, f"{name} {log.isEnabledFor(logging.DEBUG)} {log.isEnabledFor(logging.WARNING)}\\n".encode())
"""


def test_a_worker_logging_at_warning_builds_no_debug_records(kafka: Kafka, tmp_path: Path) -> None:
    """faust's terminal spinner sets the root logger to DEBUG at WARNING and above, so every
    debug call in faust and aiokafka (one per record sent) built a record: a tenth of the CPU."""
    env = {
        **os.environ,
        "SAGA_TRACKER_BROKER": f"kafka://{kafka.bootstrap}",
        "SAGA_TRACKER_DATA_DIR": str(tmp_path),
        "SAGA_TRACKER_LOG_LEVEL": "warning",
    }
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()[-2:]
    assert lines == ["aiokafka.producer.producer False True", "tracker.stream.tracking False True"], done.stdout[-2000:]
