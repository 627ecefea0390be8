"""The worker command: what it sets up around faust before faust takes over."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from tests.integration.harness import Kafka
from tracker.kafka.admin import ensure_topics
from tracker.kafka.broker import free_port
from tracker.ops.settings import Settings
from tracker.worker import fit_batches

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


def test_producer_batches_fit_the_smallest_message_limit_of_the_topics_it_writes(kafka: Kafka) -> None:
    """A batch larger than a topic's ``max.message.bytes`` is refused and exits the worker after
    every restart: the worker starts with batches no larger than the smallest limit of the topics
    it writes, a user's own outcome topic included. Tansu reports a topic's limit only where it is
    set on the topic (Apache Kafka reports every topic's)."""
    app_id = f"fit-{uuid.uuid4().hex[:6]}"
    settings = Settings.from_env(
        {
            "SAGA_TRACKER_BROKER": f"kafka://{kafka.bootstrap}",
            "SAGA_TRACKER_APP_ID": app_id,
            "SAGA_TRACKER_OUTCOME_TOPIC": f"{app_id}-their-outcomes",
            "SAGA_TRACKER_PRODUCER_MAX_BATCH_SIZE": "262144",
        }
    )
    assert fit_batches(settings, kafka.bootstrap) == settings  # no topic yet: nothing to fit
    limited = {"max.message.bytes": "100000"}
    asyncio.run(ensure_topics(kafka.bootstrap, [settings.outcomes], 1, config=limited))
    asyncio.run(ensure_topics(kafka.bootstrap, [settings.compensations], 1, config={"max.message.bytes": "500000"}))
    fitted = fit_batches(settings, kafka.bootstrap)
    assert fitted.producer_max_batch_size == 100_000
    assert fitted == replace(settings, producer_max_batch_size=100_000)  # nothing else changed
    small = replace(settings, producer_max_batch_size=50_000)
    assert fit_batches(small, kafka.bootstrap) is small  # already below every limit


def test_batches_stay_as_set_when_the_topics_limits_cannot_be_read() -> None:
    """Not allowed to describe configs (ACLs), or no broker answering: the worker starts with the
    batches it was given (and says so), instead of not starting."""
    settings = Settings.from_env({"SAGA_TRACKER_BROKER": "kafka://127.0.0.1:1", "SAGA_TRACKER_PRODUCER_MAX_BATCH_SIZE": "262144"})
    assert fit_batches(settings, f"127.0.0.1:{free_port()}") is settings  # nothing listens there
