"""Upgrading from the release with four changelog-backed tables: what it left behind goes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.harness import Kafka, Scenario, run
from tracker.generations import upgrades
from tracker.generations.upgrades import RETIRED_TABLES, remove_retired_stores


def topics(kafka: Kafka) -> set[str]:
    async def listed() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    return run(listed())  # not asyncio.run: Playwright's tests leave a loop running in this thread


def test_cleanup_lists_then_deletes_only_the_retired_tables_changelogs(scenario: Scenario, kafka: Kafka) -> None:
    s = scenario
    retired = [f"{s.app_id}-summaries-changelog", f"{s.app_id}-pending-changelog", f"{s.app_id}-g2-deadlines-changelog"]
    # Look-alikes that must stay: this release's own changelog, another app's, another app
    # whose id merely starts with this one's.
    kept = [f"{s.app_id}-sagas-changelog", f"other-{s.id}-summaries-changelog", f"{s.app_id}x-pending-changelog"]
    kafka.create(retired + kept)

    listed = s.cli("cleanup")
    assert listed.returncode == 0, listed.stderr
    assert all(t in listed.stdout for t in retired) and not any(t in listed.stdout for t in kept)
    assert set(retired + kept) <= topics(kafka)  # listing deletes nothing

    deleted = s.cli("cleanup", "--delete")
    assert deleted.returncode == 0, deleted.stderr
    assert all(t in deleted.stdout for t in retired)
    left = topics(kafka)
    assert not set(retired) & left and set(kept) <= left
    again = s.cli("cleanup")
    assert again.returncode == 0 and "nothing to clean up" in again.stdout


def test_a_worker_removes_the_retired_tables_stores_from_its_volume(scenario: Scenario) -> None:
    worker = scenario.worker("w1")
    tables = worker.data / "v1" / "tables"
    retired = [tables / f"{t}-{p}.db" for t in RETIRED_TABLES for p in (0, 3)] + [tables / "summaries-backups"]
    for path in retired:
        path.mkdir(parents=True)
        (path / "000004.log").write_bytes(b"old rows")
    kept = tables / "summaries-notes.db"  # not a partition's store
    kept.mkdir()
    worker.start()
    assert not [p for p in retired if p.exists()], worker.tail()
    assert kept.exists() and list(tables.glob("sagas-*.db"))  # this release's own stores are there
    assert "a store of the summaries table, which this release no longer has" in worker.log.read_text()


def test_a_store_that_cannot_be_removed_is_logged_and_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stuck, gone = tmp_path / "pending-1.db", tmp_path / "deadlines-2.db"
    stuck.mkdir()
    gone.mkdir()
    rmtree = upgrades.shutil.rmtree

    def refuse(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path) == stuck:
            raise PermissionError(13, "Permission denied", str(path))
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(upgrades.shutil, "rmtree", refuse)
    with caplog.at_level(logging.WARNING, logger="tracker.generations.upgrades"):
        assert remove_retired_stores(tmp_path) == [gone]
    assert stuck.exists() and not gone.exists()
    assert f"cannot remove {stuck}" in caplog.text
