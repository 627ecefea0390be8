"""The real broker, started once per session; a fresh app id, topics and data per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Kafka, Scenario
from tracker.kafka.broker import EmbeddedBroker

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(log_path=str(ARTIFACTS / "broker.log")) as b:
        yield b


@pytest.fixture(scope="session")
def kafka(broker: EmbeddedBroker) -> Kafka:
    return Kafka(broker.bootstrap)


@pytest.fixture
def scenario(kafka: Kafka, broker: EmbeddedBroker, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Scenario]:
    s = Scenario(kafka, tmp_path, broker.url)
    yield s
    s.close()
    keep_logs(request, tmp_path)


def keep_logs(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Copy the worker logs of a failed test to the artifacts directory (CI keeps nothing else)."""
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        dest = ARTIFACTS / request.node.name
        dest.mkdir(parents=True, exist_ok=True)
        for log in [*tmp_path.glob("*.log"), *tmp_path.glob("s*/*.log")]:  # worker logs, not RocksDB's
            shutil.copy(log, dest / f"{log.parent.name}-{log.name}")


@pytest.fixture
def make_scenario(
    kafka: Kafka, broker: EmbeddedBroker, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Scenario]]:
    """A scenario with its own step and confirmation timeouts."""
    made: list[Scenario] = []

    def make(timeout: str = "4s", confirm: str = "2s") -> Scenario:
        path = tmp_path / f"s{len(made)}"
        path.mkdir()
        made.append(Scenario(kafka, path, broker.url, timeout=timeout, confirm=confirm))
        return made[-1]

    yield make
    for s in made:
        s.close()
    keep_logs(request, tmp_path)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome: Any = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
