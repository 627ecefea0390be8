"""Catch-up: a lagging partition whose position stops moving holds timeouts back."""

from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP

from tracker.progress import Progress


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
