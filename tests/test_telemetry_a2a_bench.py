"""The A2A throughput benchmark's tracing comparison runs end to end at a tiny size: our node with
tracing off and with the OpenTelemetry SDK recording in memory both answer every request, and
the summary carries the on/off ratios. Timings are never asserted: at this size they mean
nothing."""

from __future__ import annotations

from a2a_bench_support import assert_every_server_answered, run_benchmark


def test_tracing_on_and_off_are_measured_side_by_side() -> None:
    summary, printed = run_benchmark("--servers", "ours", "--tracing")
    assert_every_server_answered(summary, ("ours", "ours_traced"))
    assert summary["ratio_cpu_tracing_on_vs_off"] > 0
    assert summary["ratio_time_tracing_on_vs_off"] > 0
    assert set(summary["targets_met"]) == {"ratio_cpu_tracing_on_vs_off <= 1.1"}
    assert "tracing on vs off" in printed
