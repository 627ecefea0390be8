"""How far a partition's store has its changelog, as the tracker's own state writes record it."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from tracker.changelog import Changelog

TOPIC = "app-sagas-changelog"


class Db(dict[bytes, bytes]):
    """A partition's RocksDB, as far as ``Changelog`` uses it."""

    def put(self, key: bytes, value: bytes) -> None:
        self[key] = value


class Store:
    """faust's RocksDB store, as far as ``Changelog`` uses it: partition stores and offsets."""

    def __init__(self) -> None:
        self._dbs: dict[int, Db] = {0: Db()}
        self.offsets: dict[TP, int] = {}

    def persisted_offset(self, tp: TP) -> int | None:
        return self.offsets.get(tp)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.offsets[tp] = offset


def delivered(offset: int) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(SimpleNamespace(topic=TOPIC, partition=0, offset=offset))
    return future


@pytest.fixture
def changelog() -> Changelog:
    table: Any = SimpleNamespace(data=Store())
    return Changelog(table)


async def test_the_store_records_each_delivered_offset_that_follows_what_it_has(changelog: Changelog) -> None:
    for offset in (0, 1, 2):
        changelog.in_flight += 1
        changelog._delivered(0, delivered(offset))
    assert changelog.table.data.offsets == {TP(TOPIC, 0): 2} and changelog.in_flight == 0


async def test_a_late_delivery_after_another_owners_records_does_not_skip_them(
    changelog: Changelog, caplog: pytest.LogCaptureFixture
) -> None:
    changelog._delivered(0, delivered(0))
    # Offsets 1-4 were written by the partition's owner while this worker was paused.
    with caplog.at_level(logging.WARNING):
        changelog._delivered(0, delivered(5))
        changelog._delivered(0, delivered(6))
    assert changelog.table.data.offsets == {TP(TOPIC, 0): 0}  # recovery reads 1-6
    assert len([r for r in caplog.records if "has records this store has not read" in r.message]) == 1
    # Once recovery has read them (faust records how far), its own records count again.
    changelog.table.data.set_persisted_offset(TP(TOPIC, 0), 6)
    changelog._delivered(0, delivered(7))
    assert changelog.table.data.offsets == {TP(TOPIC, 0): 7} and not changelog.gaps


async def test_an_undelivered_record_exits_the_worker(changelog: Changelog, monkeypatch: pytest.MonkeyPatch) -> None:
    def exit_(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr("tracker.changelog.os._exit", exit_)
    failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    failed.set_exception(TimeoutError("no broker"))
    with pytest.raises(SystemExit) as exited:
        changelog._delivered(0, failed)
    assert exited.value.code == 70 and changelog.table.data.offsets == {}


async def test_a_record_the_producer_refuses_exits_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    def exit_(code: int) -> None:
        raise SystemExit(code)

    async def send(*args: Any, **kwargs: Any) -> Any:
        raise TimeoutError("no metadata for the changelog topic")

    monkeypatch.setattr("tracker.changelog.os._exit", exit_)
    table: Any = SimpleNamespace(
        data=Store(),
        app=SimpleNamespace(producer=SimpleNamespace(send=send)),
        changelog_topic=SimpleNamespace(get_topic_name=lambda: TOPIC),
    )
    with pytest.raises(SystemExit) as exited:
        await Changelog(table).put(0, b"saga-1", b"{}")
    assert exited.value.code == 70 and table.data._dbs[0] == {b"saga-1": b"{}"}
