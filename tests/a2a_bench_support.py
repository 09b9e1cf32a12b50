"""Running ``benchmarks/a2a_throughput.py`` at a tiny size from a test, and checking that every
server it compared answered every request. Timings are never asserted: at this size they mean
nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "a2a_throughput.py"


def run_benchmark(*extra: str) -> tuple[dict[str, Any], str]:
    """Run the benchmark at a tiny size; its JSON summary (the last line) and all it printed."""
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            "--requests",
            "24",
            "--warmup",
            "4",
            "--rounds",
            "1",
            "--concurrency",
            "4",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout


def assert_every_server_answered(summary: dict[str, Any], servers: tuple[str, ...]) -> None:
    """The summary has a row for each of ``servers``, in order, each without errors and with
    positive rates, latencies and server CPU."""
    results = summary["results"]
    assert list(results) == list(servers)
    for name in servers:
        row = results[name]
        assert row["errors"] == 0 and row["warmup_errors"] == 0, (name, row["error_samples"])
        for key in ("rps", "p50_ms", "p99_ms", "server_cpu_ms_per_req"):
            assert row[key] > 0, (name, key, row)
