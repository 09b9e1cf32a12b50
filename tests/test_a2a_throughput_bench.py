"""The A2A throughput benchmark runs end to end with tiny numbers: every server it compares (our
node on memory, SQLite and PostgreSQL (a throwaway cluster, as in the tests), the official
Python SDK's server, the official JS SDK's server under Node 22) answers every request, and its
last line is the JSON summary with the ratio keys the issue names. Timings are never asserted:
they mean nothing at this size.
"""

from __future__ import annotations

import subprocess
import sys

from a2a_bench_support import BENCHMARK, assert_every_server_answered, run_benchmark

SERVERS = ("ours", "a2a_sdk", "js_sdk", "ours_sqlite", "ours_postgres")


def test_jsonrpc_run_compares_every_store_of_ours_with_both_official_sdks() -> None:
    summary, printed = run_benchmark("--postgres")
    assert_every_server_answered(summary, SERVERS)
    assert summary["binding"] == "jsonrpc"
    # The JS server runs on the Node 22 that tests/node_modules ships, whatever the system has.
    assert summary["node"].startswith("v22.")
    assert summary["uvicorn_http"] in ("h11", "httptools")
    for ours in ("ours", "ours_sqlite", "ours_postgres"):
        for official in ("sdk", "js"):
            assert summary[f"ratio_rps_{ours}_vs_{official}"] > 0
            assert summary[f"ratio_cpu_efficiency_{ours}_vs_{official}"] > 0
    assert set(summary["targets_met"]) == {
        "ratio_rps_ours_vs_sdk >= 2",
        "ratio_rps_ours_vs_js >= 1.5",
    }
    # The side-by-side lines: each of our rows against both official servers.
    assert any(line.startswith("ours ") and "vs js_sdk" in line for line in printed.splitlines())


def test_rest_run_serves_every_server_over_http_json() -> None:
    summary, _ = run_benchmark("--binding", "rest", "--servers", "ours,js_sdk,a2a_sdk")
    assert_every_server_answered(summary, ("ours", "js_sdk", "a2a_sdk"))
    assert summary["binding"] == "rest"
    assert "ratio_rps_ours_vs_js" in summary and "ratio_rps_ours_vs_sdk" in summary


def test_unknown_server_name_is_refused_with_the_known_names() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARK), "--servers", "ours,nginx"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "nginx" in proc.stderr and "js_sdk" in proc.stderr
