"""The faust shell with faust's test_context(): agents, tables (memory store) and channels, no broker."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import CollectorRegistry, generate_latest

from tables import rows
from tracker.app import TrackerApp, build, faust_app
from tracker.core.correlation import Record
from tracker.core.events import Event, timeout_event
from tracker.kafka.internals import on_changelog_applied
from tracker.kafka.partitioner import Partitioner, partition_of
from tracker.loader import load_catalog
from tracker.ops.settings import Settings
from tracker.stream.indexes import DEADLINE, pending_prefix
from tracker.stream.state_cache import Value, encoded


@dataclass
class Shell:
    tracker: TrackerApp
    outputs: dict[str, Any]  # name -> subscriber of an in-memory channel

    async def next(self, name: str, timeout: float = 2.0) -> faust.EventT:
        return await asyncio.wait_for(self.outputs[name].__anext__(), timeout)

    def metric(self, name: str, **labels: str) -> float | None:
        return self.tracker.metrics.registry.get_sample_value(name, labels)

    def saga(self, saga_id: str) -> dict[str, Any] | None:
        raw = self.tracker.tables.sagas.get(saga_id.encode())
        return None if raw is None else rows.data(raw)

    def deadlines(self) -> dict[bytes, dict[str, Any]]:
        """The local deadline index of every partition indexed here, key -> row."""
        return {
            key: orjson.loads(value)
            for partition in sorted(self.tracker.indexes.built)
            for key, value in self.tracker.indexes.built[partition].scan(DEADLINE)
        }


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    # The broker URL is never dialled: every topic the shell writes is swapped for a channel.
    settings = Settings.from_env({"SAGA_TRACKER_BROKER": "kafka://127.0.0.1:9", "SAGA_TRACKER_DATA_DIR": str(tmp_path)})
    t = build(settings, load_catalog(), registry=CollectorRegistry())
    app = t.app
    app.finalize()
    app.conf.store = "memory://"  # type: ignore[assignment]  # faust's setter takes a str
    app.flow_control.resume()
    channels: dict[str, Any] = {
        name: app.channel(key_type=bytes, value_type=bytes, maxsize=1000)
        for name in ("compensation", "outcome", "decision", "dead_letter", "saga_log")
    }
    t.context.sinks.update(channels)  # the processors send through their context: to the channels
    t.sweeper.behind = False  # no broker to measure lag against: caught up
    yield Shell(t, {name: ch.__aiter__() for name, ch in channels.items()})


@pytest.fixture
async def track(shell: Shell) -> AsyncIterator[Any]:
    agent = shell.tracker.app.agents[f"{shell.tracker.settings.app_id}-track"]
    # Indexed before the first record: put() returns once the agent took the record, and a
    # rebuild would let it return before the record is applied.
    await shell.tracker.indexes.ready(0)
    async with agent.test_context() as ctx:
        yield ctx


def record(event: Event) -> bytes:
    return orjson.dumps(event.to_dict())


def order_event(event_type: str, saga_id: str = "o-1", time: float = 100.0) -> Event:
    return Event(
        saga_id=saga_id,
        saga_type="order_fulfilment",
        id=f"{saga_id}:{event_type}",
        type=event_type,
        time=time,
        trace={"traceparent": "00-aa-bb-01"},
    )


async def test_track_agent_writes_state_and_deadline_index(shell: Shell, track: Any) -> None:
    await track.put(record(order_event("OrderCreated")), key=b"o-1")
    state = shell.saga("o-1")
    assert state is not None and state["status"] == "running" and state["current"] == 1
    index = shell.deadlines()
    assert list(index) == [b"%015d|o-1" % 120_000]  # due at 100 s + 20 s, ordered by due time
    assert index[b"%015d|o-1" % 120_000]["token"] == state["deadline"]["token"]
    await track.put(record(order_event("PaymentAuthorized", time=105.0)), key=b"o-1")
    assert list(shell.deadlines()) == [b"%015d|o-1" % 125_000]  # moved, old row gone
    assert shell.metric("saga_tracker_transitions_total", saga_type="order_fulfilment", outcome="completed") == 1.0


async def test_track_agent_sends_compensations_with_trace_headers_and_is_idempotent(shell: Shell, track: Any) -> None:
    await track.put(record(order_event("OrderCreated")), key=b"o-1")
    deadline = shell.saga("o-1")["deadline"]  # type: ignore[index]
    timeout = record(timeout_event("o-1", "order_fulfilment", deadline["token"], deadline["due"]))
    await track.put(timeout, key=b"o-1")
    sent = await shell.next("compensation")
    assert sent.key == b"o-1" and orjson.loads(sent.value)["id"] == "o-1:order:compensate:1"
    assert dict(sent.message.headers or ())["traceparent"] == b"00-aa-bb-01"
    before = shell.saga("o-1")
    await track.put(timeout, key=b"o-1")  # a new copy of the same timeout record
    assert shell.saga("o-1") == before
    with pytest.raises(TimeoutError):
        await shell.next("compensation", timeout=0.3)
    assert shell.metric("saga_tracker_transitions_total", saga_type="order_fulfilment", outcome="duplicate") == 1.0


async def test_an_event_applied_in_place_then_redelivered_through_the_saga_log_resends_its_output(
    shell: Shell, track: Any
) -> None:
    # Partitions moved between two deliveries of one input record (a crash may have come between
    # the state write and the send): the event is at the input record's position either way.
    t = shell.tracker
    for event_type in ("OrderCreated", "PaymentAuthorized", "InventoryReserved"):
        await track.put(record(order_event(event_type)), key=b"o-1")
    t.context.owns = lambda partition: True  # type: ignore[method-assign]
    t.ingest.partitions = 1  # the one partition the track agent's records above were applied in
    ingest = t.app.agents[f"{t.settings.app_id}-ingest"]
    body = {"id": "o-1:ShipmentCreated", "type": "ShipmentCreated", "time": 103, "data": {"order_id": "o-1"}}
    async with ingest.test_context() as ctx:
        ctx.original_channel = t.app.topic("shipping")
        await ctx.put(orjson.dumps(body), key=b"customer-7", partition=3)  # keyed by another id
    first = await shell.next("outcome")
    assert shell.metric("saga_tracker_routed_events_total", route="here") == 1.0
    position = shell.saga("o-1")["outbox"][0]["position"]  # type: ignore[index]
    assert position.startswith("shipping/3/")
    last = dataclasses.replace(order_event("ShipmentCreated", time=103.0), source=position)
    await track.put(record(last), key=b"o-1")  # the same input record, forwarded by its next reader
    again = await shell.next("outcome")
    assert orjson.loads(again.value)["id"] == orjson.loads(first.value)["id"] == "o-1:saga:SagaCompleted"
    copy = dataclasses.replace(last, source=position + "0")  # the service's second copy: no re-send
    await track.put(record(copy), key=b"o-1")
    with pytest.raises(TimeoutError):
        await shell.next("outcome", timeout=0.3)


async def test_a_timeout_record_is_set_aside_while_the_worker_is_behind(shell: Shell, track: Any) -> None:
    # A zombie's timeout, or one sent before a rebalance, may precede a completion in the backlog.
    await track.put(record(order_event("OrderCreated")), key=b"o-1")
    deadline = shell.saga("o-1")["deadline"]  # type: ignore[index]
    timeout = record(timeout_event("o-1", "order_fulfilment", deadline["token"], deadline["due"]))
    shell.tracker.sweeper.sent[("o-1", deadline["token"])] = 1.0
    shell.tracker.sweeper.behind = True
    before = shell.saga("o-1")
    await track.put(timeout, key=b"o-1")
    await track.put(record(order_event("PaymentAuthorized")), key=b"o-1")  # the completion, from the backlog
    saga = shell.saga("o-1")
    assert saga["status"] == "running" and saga["steps"][1]["state"] == "done" and before["status"] == "running"  # type: ignore[index]
    assert shell.metric("saga_tracker_timeout_records_deferred_total") == 1.0
    assert ("o-1", deadline["token"]) not in shell.tracker.sweeper.sent  # swept again at once if still due
    with pytest.raises(TimeoutError):
        await shell.next("compensation", timeout=0.3)


async def test_a_timeout_already_applied_goes_through_while_behind(shell: Shell, track: Any) -> None:
    # After a crash between the state write and the send, the redelivered timeout record must
    # reach the machine (it re-sends what was decided) even while the worker catches up.
    await track.put(record(order_event("OrderCreated")), key=b"o-1")
    deadline = shell.saga("o-1")["deadline"]  # type: ignore[index]
    timeout = record(timeout_event("o-1", "order_fulfilment", deadline["token"], deadline["due"]))
    await track.put(timeout, key=b"o-1")
    await shell.next("compensation")
    shell.tracker.sweeper.behind = True
    await track.put(timeout, key=b"o-1")
    assert shell.metric("saga_tracker_timeout_records_deferred_total") == 0.0
    assert shell.metric("saga_tracker_transitions_total", saga_type="order_fulfilment", outcome="duplicate") == 1.0


async def test_track_agent_dead_letters_a_broken_log_record_and_keeps_going(shell: Shell, track: Any) -> None:
    await track.put(b'{"kind": "service"}', key=b"x")
    dead = await shell.next("dead_letter")
    headers = dict(dead.message.headers or ())
    assert headers["x-dead-letter-reason"] == b"bad_record" and b"misses field" in headers["x-dead-letter-detail"]
    await track.put(b"\x00 not json", key=b"y")
    dead = await shell.next("dead_letter")
    assert dict(dead.message.headers or ())["x-dead-letter-reason"] == b"bad_record"
    await track.put(record(order_event("OrderCreated", "o-2")), key=b"o-2")
    assert shell.saga("o-2") is not None
    # Input in the wrong format is not a bug of the tracker's: counted as a dead letter, not an error.
    assert shell.metric("saga_tracker_dead_letters_total", reason="bad_record") == 2.0
    assert shell.metric("saga_tracker_processing_errors_total", stage="tracking") is None


async def test_ingest_forwards_by_saga_id_and_dead_letters_the_rest(shell: Shell) -> None:
    ingest = shell.tracker.ingest
    good = orjson.dumps({"id": "e-1", "type": "PaymentAuthorized", "time": 100, "data": {"order_id": "o-7"}})
    await ingest.process(Record("payments", 3, 12, b"any-key", good, [("traceparent", b"00-x-y-01")], 99.0))
    forwarded = await shell.next("saga_log")
    assert forwarded.key == b"o-7"
    event = Event.from_dict(orjson.loads(forwarded.value))
    assert (event.saga_type, event.type, event.source, event.trace["traceparent"]) == (
        "order_fulfilment",
        "PaymentAuthorized",
        "payments/3/12",
        "00-x-y-01",
    )
    await ingest.process(Record("payments", 3, 13, b"k", b"{not json", [], 99.0))
    dead = await shell.next("dead_letter")
    assert dict(dead.message.headers or ())["x-dead-letter-reason"] == b"not_json" and dead.value == b"{not json"
    await ingest.process(Record("orders", 0, 1, b"k", orjson.dumps({"type": "OrderViewed", "data": {}}), [], 99.0))
    assert shell.metric("saga_tracker_ignored_events_total", saga_type="order_fulfilment") == 1.0
    assert shell.metric("saga_tracker_dead_letters_total", reason="not_json") == 1.0


async def test_a_flood_of_bad_input_is_counted_in_full_but_logged_sparingly(
    shell: Shell, caplog: pytest.LogCaptureFixture
) -> None:
    ingest = shell.tracker.ingest
    for n in range(50):
        await ingest.process(Record("orders", 0, n, b"k", orjson.dumps({"type": "Teleported", "data": {}}), [], 1.0))
    assert shell.metric("saga_tracker_dead_letters_total", reason="unknown_event_type") == 50.0
    lines = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(lines) == 1
    for _ in range(50):
        await shell.next("dead_letter")  # every one of them is on the dead-letter topic


async def test_a_stale_deadline_row_is_removed_when_its_timeout_arrives(shell: Shell, track: Any) -> None:
    await track.put(record(order_event("OrderCreated")), key=b"o-1")
    stale = shell.saga("o-1")["deadline"]  # type: ignore[index]
    # As after a partial changelog recovery: the saga moved on, its old index row did not go.
    state = shell.saga("o-1")
    assert state is not None
    state["deadline"] = {"token": "9@999000", "due": 999.0}
    state["steps"][1]["due"] = 999.0
    shell.tracker.tables.sagas.data[b"o-1"] = orjson.dumps(state)
    # A recovery also drops the decoded states kept with the partition's index (``Hot``); the
    # index row is left stale here on purpose, so only the states go.
    shell.tracker.tracking.hot.entries.clear()
    assert b"%015d|o-1" % 120_000 in shell.deadlines()
    await track.put(record(timeout_event("o-1", "order_fulfilment", stale["token"], stale["due"])), key=b"o-1")
    assert b"%015d|o-1" % 120_000 not in shell.deadlines()
    assert shell.saga("o-1")["status"] == "running"  # type: ignore[index]
    assert shell.metric("saga_tracker_transitions_total", saga_type="order_fulfilment", outcome="stale_timeout") == 1.0


async def test_indexes_are_rebuilt_when_the_changelog_changes_saga_state(shell: Shell, track: Any) -> None:
    # Summaries, pending and deadline rows have no changelog: when a changelog recovery (or
    # a standby) writes sagas behind the track agent's back, they are rebuilt from the
    # partition's saga state, and so is the census. A rebalance alone keeps them.
    for n in range(3):
        await track.put(record(order_event("OrderCreated", saga_id=f"o-{n}", time=100.0 + n)), key=f"o-{n}".encode())
    indexes = shell.tracker.indexes
    before = shell.deadlines()
    assert len(before) == 3
    # As a changelog recovery would: o-1 moved on (deadline 999 s), o-2 completed.
    moved = shell.saga("o-1")
    assert moved is not None
    moved["deadline"] = {"token": "9@999000", "due": 999.0}
    moved["steps"][1]["due"] = 999.0
    shell.tracker.tables.sagas.data[b"o-1"] = orjson.dumps(moved)
    done = shell.saga("o-2")
    assert done is not None
    done.update(status="completed", deadline=None, current=None, ended_at=150.0)
    shell.tracker.tables.sagas.data[b"o-2"] = orjson.dumps(done)
    indexes.moved()  # partitions moved, this one stayed: nothing to rebuild
    assert await indexes.ready(0) is not None and shell.deadlines() == before
    indexes.invalidate({0})  # as faust applying changelog records to partition 0 does
    assert not indexes.built
    index = await indexes.ready(0)
    assert index is not None
    assert list(shell.deadlines()) == [b"%015d|o-0" % 120_000, b"%015d|o-1" % 999_000]
    assert {r["saga_id"]: r["status"] for r in index.summaries()} == {"o-0": "running", "o-1": "running", "o-2": "completed"}
    assert sum(indexes.census.total().values()) == 2  # o-2 is no longer in flight
    # Twice: the fixture indexed the empty partition first.
    assert shell.metric("saga_tracker_index_rebuild_duration_seconds_count") == 2.0
    # The track agent waits for the rebuild too: the next record finds the rebuilt index.
    indexes.invalidate({0})
    await track.put(record(order_event("PaymentAuthorized", saga_id="o-0", time=105.0)), key=b"o-0")
    for _ in range(100):
        if indexes.built and (shell.saga("o-0") or {}).get("current") == 2:
            break
        await asyncio.sleep(0.01)
    assert list(shell.deadlines()) == [b"%015d|o-0" % 125_000, b"%015d|o-1" % 999_000]


async def test_a_saga_in_flight_is_decoded_once_and_read_again_after_the_changelog_changed_it(shell: Shell, track: Any) -> None:
    await track.put(record(order_event("OrderCreated")), key=b"o-1")
    await track.put(record(order_event("PaymentAuthorized", time=101.0)), key=b"o-1")
    assert shell.metric("saga_tracker_hot_state_reads_total", result="miss") == 1.0  # the first event
    assert shell.metric("saga_tracker_hot_state_reads_total", result="hit") == 1.0  # kept decoded since
    # As a changelog recovery would: the saga's row changes behind the track agent's back, and
    # the partition's index is dropped with the decoded states kept under it.
    changed = shell.saga("o-1")
    assert changed is not None
    changed["keys"] = {"restored": "from-the-changelog"}
    shell.tracker.tables.sagas.data[b"o-1"] = orjson.dumps(changed)
    shell.tracker.indexes.invalidate({0})
    await track.put(record(order_event("InventoryReserved", time=102.0)), key=b"o-1")
    for _ in range(100):  # the agent rebuilds the index first: put() returns before it applies
        if (shell.saga("o-1") or {}).get("current") == 3:
            break
        await asyncio.sleep(0.01)
    saga = shell.saga("o-1")
    assert saga is not None and saga["keys"] == {"restored": "from-the-changelog"} and saga["current"] == 3
    assert shell.metric("saga_tracker_hot_state_reads_total", result="miss") == 2.0


async def test_an_undecodable_saga_row_does_not_leave_its_partition_unindexed(shell: Shell, track: Any) -> None:
    await track.put(record(order_event("OrderCreated", saga_id="o-1")), key=b"o-1")
    shell.tracker.tables.sagas.data[b"o-0"] = b'{"not": "a saga"}'
    shell.tracker.indexes.invalidate({0})
    index = await shell.tracker.indexes.ready(0)
    assert index is not None and [r["saga_id"] for r in index.summaries()] == ["o-1"]
    assert shell.metric("saga_tracker_processing_errors_total", stage="index") == 1.0


def test_changelog_batches_name_their_partitions_before_they_are_applied() -> None:
    applied: list[list[Any]] = []
    seen: list[set[int]] = []

    class Table:  # the one method faust's recovery and standbys call
        def apply_changelog_batch(self, batch: Any) -> None:
            applied.append(list(batch))

    def event(partition: int) -> Any:
        return SimpleNamespace(message=SimpleNamespace(partition=partition))

    table: Any = Table()
    on_changelog_applied(table, seen.append)
    batch = [event(0), event(2), event(0)]
    table.apply_changelog_batch(iter(batch))  # faust may pass any iterable: read once
    assert seen == [{0, 2}] and applied == [batch]


def saga_in_partition(partition: int, partitions: int) -> str:
    return next(f"o-{n}" for n in range(1000) if partition_of(f"o-{n}", partitions) == partition)


async def test_an_event_whose_sagas_partition_is_active_here_is_applied_in_place(shell: Shell) -> None:
    t = shell.tracker
    t.context.owns = lambda partition: partition in (1, 2)  # type: ignore[method-assign]  # active here
    agent = t.app.agents[f"{t.settings.app_id}-ingest"]
    here = saga_in_partition(2, t.settings.partitions)
    keyed_otherwise = saga_in_partition(1, t.settings.partitions)
    elsewhere = saga_in_partition(3, t.settings.partitions)
    async with agent.test_context() as ctx:
        ctx.original_channel = t.app.topic("orders")  # what its messages name as their topic
        for saga_id in (here, keyed_otherwise, elsewhere):
            body = {"id": f"{saga_id}:created", "type": "OrderCreated", "time": 100, "data": {"order_id": saga_id}}
            # All read from partition 2 (keyed by, say, customer): only one is in its saga's.
            await ctx.put(orjson.dumps(body), key=b"customer-7", partition=2)
    # In its saga's partition, or in another while the saga's partition is active here:
    # applied by the ingest agent itself, nothing on the saga log.
    for saga_id in (here, keyed_otherwise):
        state = shell.saga(saga_id)
        assert state is not None and state["status"] == "running"
        assert state["seen"] == [f"{saga_id}:created"]
    # Its saga's partition is another worker's: re-keyed onto the saga log, untouched here.
    forwarded = await shell.next("saga_log")
    assert forwarded.key == elsewhere.encode() and shell.saga(elsewhere) is None
    assert shell.metric("saga_tracker_routed_events_total", route="here") == 2.0
    assert shell.metric("saga_tracker_routed_events_total", route="saga_log") == 1.0


async def test_the_oldest_pending_age_is_read_from_the_index_for_long_type_and_step_names(shell: Shell, track: Any) -> None:
    """Index keys of the pending index are "<since ms>|<saga id>" under the type and step: the
    prefix must be cut off once (twice failed every scrape once a name pair was long)."""
    await track.put(record(order_event("OrderCreated", "o-1", time=100.0)), key=b"o-1")
    await track.put(record(order_event("OrderCreated", "o-2", time=250.5)), key=b"o-2")
    index = shell.tracker.indexes.cached(0)
    assert index is not None
    assert index.oldest_pending(pending_prefix("order_fulfilment", "payment")) == 100.0
    assert index.oldest_pending(pending_prefix("order_fulfilment", "shipping")) is None
    shell.tracker.context.active_partitions = lambda: [0]  # type: ignore[method-assign]  # no assignor here
    text = generate_latest(shell.tracker.metrics.registry).decode()
    line = next(x for x in text.splitlines() if x.startswith("saga_tracker_oldest_in_flight_age_seconds{"))
    assert 'step="payment"' in line and abs(float(line.rsplit(" ", 1)[1]) - (time.time() - 100.0)) < 60


async def test_an_event_whose_partition_moves_away_while_applying_is_forwarded_not_dead_lettered(shell: Shell) -> None:
    t = shell.tracker
    looks = iter([await t.indexes.ready(0)])  # open here when the ingest agent looks...

    async def gone(partition: int) -> None:
        return None  # ...and gone by the time the decision is made

    t.indexes.cached = lambda partition: next(looks, None)  # type: ignore[method-assign]
    t.indexes.ready = gone  # type: ignore[method-assign,assignment]
    record_ = Record("orders", 0, 5, b"o-9", b"{}", [], 1.0)
    assert await t.tracking.apply_here(order_event("OrderCreated", "o-9"), record_, 0) is False
    assert shell.metric("saga_tracker_dead_letters_total", reason="partition_not_here") is None


def test_a_sagas_partition_is_the_one_the_producer_puts_its_saga_log_records_in() -> None:
    """aiokafka's default partitioner, the tracker's and the producer's (remembering hashes) agree."""
    partitioner, producers = DefaultPartitioner(), Partitioner()
    for n in range(500):
        saga_id = f"order-{n}-é"
        for count in (1, 4, 12):
            everyone = list(range(count))
            assert partition_of(saga_id, count) == partitioner(saga_id.encode(), everyone, everyone)
            assert producers(saga_id.encode(), everyone, everyone) == partitioner(saga_id.encode(), everyone, everyone)
    assert producers(None, [0, 1, 2], [1]) == 1  # no key: one of the available partitions, as aiokafka's


def test_the_commit_interval_is_the_checkpoint_s_and_the_feed_s() -> None:
    """An output waits for the checkpoint after its decision: the setting bounds that wait, for
    faust's commit timer and the feed's punctuator alike (``build`` reads it from faust's conf)."""
    assert faust_app(Settings.from_env({}), "kafka://k:9092").conf.broker_commit_interval == 2.8
    quick = Settings.from_env({"SAGA_TRACKER_COMMIT_INTERVAL": "0.5"})
    assert faust_app(quick, "kafka://k:9092").conf.broker_commit_interval == 0.5


def test_the_producer_lingers_only_where_a_batch_holds_more_than_one_record() -> None:
    """faust hands records to the producer one by one: without a linger every changelog record
    is a batch of its own; with a batch size of 1 it batches nothing and only delays lone records."""
    real = {"SAGA_TRACKER_BROKER": "kafka://k:9092"}
    assert faust_app(Settings.from_env(real), "kafka://k:9092").conf.producer_linger == 0.005
    slow = {**real, "SAGA_TRACKER_PRODUCER_LINGER_MS": "20"}
    assert faust_app(Settings.from_env(slow), "kafka://k:9092").conf.producer_linger == 0.02
    for one in ({**real, "SAGA_TRACKER_PRODUCER_MAX_BATCH_SIZE": "1"}, {}):  # {}: the embedded broker
        assert faust_app(Settings.from_env(one), "kafka://k:9092").conf.producer_linger == 0.0


async def test_a_decision_is_written_whole_before_its_changelog_send_awaits(shell: Shell, track: Any) -> None:
    # The ingest and track agents interleave at awaits: a saga's index rows written after the
    # send's await could overwrite those of the saga's next record, applied meanwhile.
    table, gate, seen = shell.tracker.tables.sagas, asyncio.Event(), []

    class SlowSend:
        async def put(self, partition: int, key: bytes, value: Value, *, through: bool = False) -> None:
            table[key] = encoded(value)  # before the first await, as the state cache

            seen.append((shell.saga("o-1"), shell.deadlines()))
            await gate.wait()  # the producer's buffer is full

        def get(self, key: bytes, partition: int | None = None) -> bytes | None:
            return table.get(key)

    shell.tracker.tracking.writes = SlowSend()
    put = asyncio.ensure_future(track.put(record(order_event("OrderCreated")), key=b"o-1"))
    while not seen:
        await asyncio.sleep(0.01)
    state, deadlines = seen[0]
    assert state is not None and list(deadlines) == [b"%015d|o-1" % 120_000]
    assert deadlines[b"%015d|o-1" % 120_000]["token"] == state["deadline"]["token"]
    gate.set()
    await put


async def test_a_decision_that_sends_is_stored_before_its_output_is_sent(shell: Shell, track: Any) -> None:
    # The decision is in the saga's row before its output goes out, and the output names the
    # row's partition: the worker's producer holds it until the checkpoint has that row's
    # changelog record with the producer (``Outgoing``'s gate; tests/agents/test_checkpoint.py,
    # tests/integration/test_outgoing.py). The agent tests' memory store writes every row at once.
    table, order = shell.tracker.tables.sagas, list[tuple[Any, ...]]()
    tracking = shell.tracker.tracking

    class Recording:
        async def put(self, partition: int, key: bytes, value: Value) -> None:
            table[key] = value = encoded(value)
            order.append(("put", partition, bool(rows.data(value)["outbox"])))

        def get(self, key: bytes, partition: int | None = None) -> bytes | None:
            return table.get(key)

    send = tracking.send

    async def recorded_send(emit: Any, partition: int) -> Any:
        order.append(("send", emit.kind, partition))
        return await send(emit, partition)

    tracking.writes = Recording()
    tracking.send = recorded_send  # type: ignore[method-assign]
    await track.put(record(order_event("OrderCreated")), key=b"o-1")
    deadline = shell.saga("o-1")["deadline"]  # type: ignore[index]
    await track.put(record(timeout_event("o-1", "order_fulfilment", deadline["token"], deadline["due"])), key=b"o-1")
    partition = order[0][1]
    assert order[0] == ("put", partition, False)  # started: nothing to send
    assert order[1] == ("put", partition, True)  # the timeout's compensation, recorded in the outbox
    assert order[2:] and all(entry[0] == "send" and entry[2] == partition for entry in order[2:])
    assert ("send", "compensation", partition) in order


class Exited(BaseException):
    """Stands in for the process exit: nothing after ``exit_to_restart`` may run."""


async def test_a_processor_that_raises_exits_the_worker_before_the_record_counts_as_processed(
    shell: Shell, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust acknowledges the record of an agent that raises and restarts the agent (#527), so
    its offset is committed past a record nobody handled. The tracker's agents never let that
    happen: a processor that raises (a bug: they dead-letter what they cannot use) exits the
    worker to be restarted before the record is reported processed, so it is read again."""
    t = shell.tracker
    reasons: list[str] = []

    def exit_(reason: str) -> None:
        reasons.append(reason)
        raise Exited(reason)

    async def broken(record: Record, exc: BaseException, *, stage: str) -> None:
        raise RuntimeError("a bug in a processor")  # e.g. the dead-letter path itself fails

    monkeypatch.setattr("tracker.app.exit_to_restart", exit_)
    monkeypatch.setattr(t.ingest.dead_letters, "failed", broken)
    agent = t.app.agents[f"{t.settings.app_id}-ingest"]
    with pytest.raises(Exited):
        async with agent.test_context() as ctx:
            await ctx.put(b"{}", key=b"k", partition=2)
    assert reasons and "RuntimeError('a bug in a processor')" in reasons[0]
    assert not any(tp.partition == 2 for tp in t.progress.next_offset)  # never reported processed


async def test_an_event_of_a_partition_with_a_replayed_backlog_goes_behind_it_through_the_saga_log(
    shell: Shell, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = shell.tracker
    t.context.owns = lambda partition: True  # type: ignore[method-assign]  # its state is here...
    monkeypatch.setattr(t.ingest.backlog, "pending", lambda partition: True)  # ...behind a replayed backlog
    body = {"id": "e-1", "type": "OrderCreated", "time": 100, "data": {"order_id": "o-5"}}
    await t.ingest.process(Record("orders", 0, 3, b"o-5", orjson.dumps(body), [], 99.0))
    forwarded = await shell.next("saga_log")
    assert forwarded.key == b"o-5" and shell.saga("o-5") is None  # not applied in place
    assert shell.metric("saga_tracker_routed_events_total", route="saga_log") == 1.0
