"""Fault scenarios on the real broker, checked against the offline oracle.

``make test`` runs the reduced set; ``make faults`` (FAULTS=full) runs every scenario and
writes the table to ``docs/faults.md`` (FAULTS_REPORT).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Verdict, markdown
from tests.faults.scenarios import ALL, REDUCED, Context
from tests.integration.harness import Kafka
from tracker.kafka.broker import EmbeddedBroker

pytestmark = pytest.mark.integration
SEED = int(os.environ.get("FAULTS_SEED", "7"))
# FAULTS=full: every scenario; FAULTS=late,broker: those; unset: the reduced set.
_FAULTS = os.environ.get("FAULTS", "")
CHOSEN = list(ALL) if _FAULTS == "full" else [n for n in _FAULTS.split(",") if n] or list(REDUCED)
VERDICTS: list[Verdict] = []


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    path = tmp_path_factory.mktemp("faults-broker")
    with EmbeddedBroker(log_path=str(path / "broker.log")) as b:
        yield b
    report = os.environ.get("FAULTS_REPORT")
    if report and VERDICTS:
        Path(report).write_text(
            Path(report).read_text().split("<!-- table -->")[0] + "<!-- table -->\n\n" + markdown(SEED, VERDICTS)
        )


@pytest.mark.parametrize("name", CHOSEN)
def test_scenario(name: str, broker: EmbeddedBroker, tmp_path: Path) -> None:
    ctx = Context(broker, Kafka(broker.bootstrap), tmp_path, SEED)
    v = ALL[name](ctx)
    VERDICTS.append(v)
    failed = {k: why for k, why in v.checks.items() if why != "pass"}
    assert not failed, f"{v.scenario}: {failed}; notes: {v.notes}"
