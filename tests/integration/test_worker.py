"""The worker command: what it sets up around faust before faust takes over."""

from __future__ import annotations

import logging
from pathlib import Path

import faust
import pytest

from tests.integration.harness import Kafka
from tracker import worker as worker_module
from tracker.settings import Settings

pytestmark = pytest.mark.integration


def test_a_worker_logging_at_warning_builds_no_debug_records(
    kafka: Kafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust's terminal spinner sets the root logger to DEBUG at WARNING and above, so every
    debug call in faust and aiokafka (one per record sent) built a record: a tenth of the CPU."""
    started: list[faust.Worker] = []
    monkeypatch.setattr(faust.Worker, "execute_from_commandline", lambda self: started.append(self))
    settings = Settings.from_env(
        {
            "SAGA_TRACKER_BROKER": f"kafka://{kafka.bootstrap}",
            "SAGA_TRACKER_DATA_DIR": str(tmp_path),
            "SAGA_TRACKER_LOG_LEVEL": "warning",
        }
    )
    worker_module.run(settings)
    (worker,) = started
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        worker._setup_logging()  # what the worker does first when it starts
        assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("tracker.tracking").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("tracker.tracking").isEnabledFor(logging.WARNING)
    finally:
        root.handlers[:], root.level = handlers, level
