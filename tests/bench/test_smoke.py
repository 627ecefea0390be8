"""A small run of the benchmark, so the harness cannot rot (figures are not asserted: speed is
measured by `make bench`, not by tests)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def smoke(*args: str) -> str:
    # Its own process group: whatever happens, no broker or worker of the benchmark outlives the test.
    bench = subprocess.Popen(
        [sys.executable, "-m", *args, "--smoke"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = bench.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(bench.pid, signal.SIGKILL)
        bench.wait()
    assert bench.returncode == 0, out[-3000:] + err[-3000:]
    return out


def test_benchmark_smoke_run() -> None:
    out = smoke("bench.run", "--sagas", "300")
    events = int(re.search(r"input: (\d+) events", out).group(1))  # type: ignore[union-attr]
    rows = re.findall(r"^(raw .*?|tracker .*?)\s+(\d+)\s+(\d+)\s+([\d.]+)$", out, re.M)
    # raw, the tracker's code on plain aiokafka batches, its decisions alone in memory, the
    # worker, the worker on the same events keyed by customer (applied where read, or through
    # the saga log: the routes are printed): every event processed by each
    assert len(rows) == 5 and all(int(n) == events for _, n, _, _ in rows), rows
    stages = re.search(r"decisions alone \(no I/O\): [\d.]+ us/event; by stage: (.*)$", out, re.M)
    assert stages and stages.group(1).count(",") == 5 and "apply" in stages.group(1), out
    assert re.search(r"at most \d+\.\d+ of raw", out), out
    assert re.search(r"keyed by customer\): \d+\.\d+ of the rate keyed by saga id \(routes: here \d+, saga_log \d+\)", out), out
    assert re.search(r"tracker/raw\s+= \d+\.\d+", out) and "peak RSS" in out
    assert re.search(r"no faust \(aiokafka batches\): \d+\.\d+ of raw", out), out


def test_scale_benchmark_smoke_run() -> None:
    """Changelogs written for 2,000 sagas are recovered by a worker that counts all of them."""
    out = smoke("bench.scale", "--sagas", "2000")
    # One changelog record per saga: the indexes are rebuilt from the saga state, not recovered.
    assert "2000 changelog records written" in out and "raw consumption of the changelogs: 2000 records" in out
    assert re.search(r"recovery: ready after [\d.]+s .* 2000 sagas counted in flight; peak RSS \d+ MB", out), out
    assert re.search(r"sweep scan of 1000 due deadlines .*: ratio \d+\.\d+ \(right after writing them", out), out


def test_faust_floor_smoke_run() -> None:
    """faust alone (an agent, a consumer callback, an agent writing a table through faust and
    as the tracker writes saga state) on the same input."""
    out = smoke("bench.floor", "--sagas", "300")
    rows = re.findall(r"^(agent|handler|agent \+ table|agent \+ changelog)\s+(\d+)\s+([\d.]+)\s", out, re.M)
    assert [name for name, _, _ in rows] == ["agent", "handler", "agent + table", "agent + changelog"], out
    assert all(int(rate) > 0 and float(us) > 0 for _, rate, us in rows), rows
    assert re.search(r"channel, stream and agent: -?[\d.]+ us/event; faust's consumer alone: [\d.]+ us/event", out), out
    assert re.search(r"a table write through faust: -?[\d.]+ us/event; as the tracker writes: -?[\d.]+ us/event", out), out
