"""The MoE speed benchmark runs end to end and ends with its JSON summary (no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from agent_runtime.model import cpu_kernels  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_moe_speed_quick_run_prints_a_json_summary_last() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "moe_speed.py"),
            "--quick",
            "--configs",
            "tiny",
            "--dtypes",
            "float32",
            "--prefill",
            "24",
            "--decode",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    last = proc.stdout.strip().splitlines()[-1]
    report = json.loads(last)
    tiny = report["tiny"]["float32"]
    assert tiny["tokens_compared"] == 5
    assert tiny["greedy_tokens_equal"] == 5  # same weights, same greedy tokens
    assert tiny["prefill_tok_s"] > 0 and tiny["decode_bound_tok_s"] > 0
    assert set(report["targets_met"]) == {"tiny_fp32_decode_3x"}
    assert report["kimi_layer_cuda"].startswith("skipped") or "decode" in report["kimi_layer_cuda"]
    if cpu_kernels.available():  # the fused step, measured beside the layer path
        assert tiny["fused_decode"] and tiny["fused_speedup"] > 0
    offload = report["offload"]  # benchmarks/moe_offload.py --quick, merged
    assert offload["runs"] and all(r["ms_per_tok"] > 0 for r in offload["runs"])
    assert {"skewed", "uniform"} == {r["routing"] for r in offload["runs"]}


def test_local_model_quick_run_prints_every_target_key_last() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "local_model.py"), "--quick", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in (
        "constrained_decode_ratio",
        "constrained_decode_ratio_no_jump_forward",
        "forced_token_fraction",
        "prefix_cache_prefill_token_ratio",
        "prefix_cache_ttft_speedup",
        "encode_ratio_vs_tiktoken",
    ):
        assert report[key] > 0, key
    details = report["details"]
    assert (
        details["prefix_cache"]["prefilled_tokens_cached"]
        < details["prefix_cache"]["step2_prompt_tokens"]
    )
    assert 0 < report["forced_token_fraction"] <= 1
