"""A small run of the benchmark, so the harness cannot rot (figures are not asserted: speed is
measured by `make bench`, not by tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_smoke_run() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--sagas", "300", "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    events = int(re.search(r"input: (\d+) events", out).group(1))  # type: ignore[union-attr]
    rows = re.findall(r"^(raw .*?|tracker .*?)\s+(\d+)\s+(\d+)\s+([\d.]+)$", out, re.M)
    assert len(rows) == 2 and all(int(n) == events for _, n, _, _ in rows)  # every event processed by each
    assert re.search(r"tracker/raw\s+= \d+\.\d+", out) and "peak RSS" in out
