"""Catch-up: a lagging partition whose position stops moving holds timeouts back."""

from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP

from tracker.stream.catchup import Progress


def test_a_partition_that_stops_moving_with_records_left_is_stalled() -> None:
    now = [100.0]
    app = SimpleNamespace(conf=SimpleNamespace(broker_commit_interval=2.8))
    p = Progress(app, ["orders"], "log", "127.0.0.1:9", lag_threshold=100, clock=lambda: now[0])
    dead, busy, idle = TP("orders", 0), TP("orders", 1), TP("orders", 2)
    p.lags = {dead: 3, busy: 3, idle: 0}
    assert p.stalled({dead: 10, busy: 50, idle: 7}) == []
    now[0] += 4.0
    assert p.stalled({dead: 10, busy: 60, idle: 7}) == []  # moving, or nothing left: fine
    now[0] += 2.0  # 6 s without progress, more than 2 x the commit interval (5.6 s)
    assert p.stalled({dead: 10, busy: 70, idle: 7}) == [dead]
    p.lags[dead] = 0  # its new owner caught up
    assert p.stalled({dead: 13, busy: 80, idle: 7}) == []


def test_a_rebalance_gives_a_partition_that_did_not_move_a_fresh_window() -> None:
    """Kept across the rebalance, a partition that stood still under its dead owner looked
    stalled (and wedged) the moment it arrived here, and the new owner exited at once."""
    now = [100.0]
    app = SimpleNamespace(conf=SimpleNamespace(broker_commit_interval=2.8))
    p = Progress(app, ["orders"], "log", "127.0.0.1:9", lag_threshold=100, clock=lambda: now[0])
    tp = TP("orders", 1)
    p.lags = {tp: 2}
    assert p.stalled({tp: 1}) == []
    now[0] += 30.0  # its owner was killed; nobody moved it for 30 s
    p.restart()  # now it is ours
    assert p.stalled({tp: 1}) == []
    now[0] += 6.0  # and stands still here too
    assert p.stalled({tp: 1}) == [tp]


class Measured(Progress):
    """Progress with the broker's answers given: end offsets and the group's positions."""

    def __init__(self, own: set[TP], ends: dict[TP, int], at: dict[TP, int]) -> None:
        async def flush() -> None:
            return None

        app = SimpleNamespace(
            conf=SimpleNamespace(broker_commit_interval=2.8),
            consumer=SimpleNamespace(assignment=lambda: own),
            producer=SimpleNamespace(flush=flush),
        )
        super().__init__(app, ["orders"], "log", "127.0.0.1:9", lag_threshold=5)
        self.ends, self.at = ends, at

    async def describe(self) -> dict[str, int]:
        return {"orders": len([tp for tp in self.ends if tp.topic == "orders"])}

    async def own_log_partitions(self) -> list[TP]:
        return []

    async def end_offsets(self, tps: list[TP]) -> dict[TP, int]:
        return {tp: self.ends[tp] for tp in tps}

    async def group_positions(self, tps: list[TP]) -> dict[TP, int]:
        return {tp: self.at[tp] for tp in tps}

    async def first_timestamps(self, wanted: dict[TP, int]) -> dict[TP, float | None]:
        return {tp: 1.0 for tp in wanted}


async def test_catch_up_waits_for_its_own_partitions_exactly_and_for_others_within_the_threshold() -> None:
    mine, theirs = TP("orders", 0), TP("orders", 1)
    p = Measured({mine}, ends={mine: 10, theirs: 10}, at={mine: 9, theirs: 6})
    assert await p.behind() and "orders/0 9/10" in p.why and "orders/1" not in p.why
    p.at[mine] = 10  # ours done; theirs 4 behind in the committed offsets, under the threshold of 5
    assert not await p.behind()
    assert p.watermark == 1.0  # and stream time still holds deadlines back past what waits there
    p.at[theirs] = 4  # further behind than the threshold once live: behind again
    assert await p.behind() and "lag" in p.why


async def test_every_rebalance_restarts_catch_up_even_with_the_same_partitions_back() -> None:
    mine = TP("orders", 0)
    p = Measured({mine}, ends={mine: 3}, at={mine: 3})
    assert not await p.behind()
    epoch = p.epoch
    p.restart()  # a paused worker woke up and got its partitions back, with a backlog
    p.ends[mine] = 8
    assert p.epoch == epoch + 1 and await p.behind()
    p.at[mine] = 8
    assert not await p.behind()
