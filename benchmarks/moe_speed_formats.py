"""Decode speed of low-precision experts (FP8 blocks, INT8, INT4) against fp32 and bf16, one run.

On the benchmark's "large" config (``model/presets.large_hf_config``: hidden 1024, 8 layers, 64
experts top-6, moe_intermediate 256, vocab 32k) one random fp32 model is built; from it a bf16
copy and, per format, a bf16 model whose routed and shared experts are converted with
:func:`quantize_experts` (``shared=True``) and kept in that format (reported as ``<format>``, the
way Kimi K2 Thinking ships: low-precision experts, bf16 rest), and the same with the rest in fp32
(``<format>.rest_float32``: its logit error is the experts' quantisation error alone). Every model decodes the same
tokens (the fp32 model's greedy continuation of a random prompt, fed to all: teacher forcing, so
logits compare step by step), one thread, the models taking turns in blocks of 8 steps so noise
from other processes hits all alike. Per model: median decode step (wall clock and this thread's
CPU time), tok/s, the bytes one decode token reads in that format (weights actually stored, plus
the latent cache rows), the same-run memory-bandwidth bound (that byte count over the read
bandwidth measured in this run, ``read_bandwidth`` of ``moe_speed.py``), tok/s relative to bf16,
and the logit error against the fp32 model over the fp32 logits' standard deviation (the largest
over all steps, and the median of each step's largest). On a random MoE both are dominated by
routing flips: rounding moves a near-tied router score and another expert is chosen, so even the
bf16 model's largest error is of the order of the logits' spread.

``moe_speed.py`` merges :func:`run_formats`'s result under ``large.<format>``; run alone it prints
the same numbers, last line one JSON object.

    python benchmarks/moe_speed_formats.py              # 64 decode steps
    python benchmarks/moe_speed_formats.py --quick      # smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from agent_runtime.model import cpu_kernels
from agent_runtime.model.config import MoEConfig
from agent_runtime.model.moe import MoEBlock
from agent_runtime.model.presets import large_hf_config
from agent_runtime.model.quant import quantize_experts
from agent_runtime.model.transformer import MoEForCausalLM

FORMATS = ("fp8", "int8", "int4")
_BLOCK = 8


def _format_weight_bytes(model: MoEForCausalLM) -> tuple[float, float]:
    """(weight bytes one decode token reads, the part of them in expert banks): the dense
    count of :meth:`weight_bytes_per_token` with each bank's active experts replaced by their
    stored size (the average expert, times top-k) and the converted shared experts likewise."""
    total = float(model.weight_bytes_per_token())
    size = torch.finfo(model.dtype).bits // 8
    h = model.config.hidden_size
    banked = 0.0
    for layer in model.layers:
        block = layer.mlp
        if not isinstance(block, MoEBlock) or block.bank is None:
            continue
        pairs = block.bank.fetch(range(block.n_experts), torch.empty(0))
        per_expert = sum(gu.nbytes + d.nbytes for gu, d in pairs) / len(pairs)
        total -= block.top_k * 3 * h * block.inter * size
        total += block.top_k * per_expert
        banked += block.top_k * per_expert
        if block.shared_pair is not None:
            gu, d = block.shared_pair
            total -= 3 * h * (gu.out_features // 2) * size
            total += gu.nbytes + d.nbytes
            banked += gu.nbytes + d.nbytes
    return total, banked


def _dense_expert_bytes(model: MoEForCausalLM) -> float:
    """Bytes of the routed and shared experts one dense decode token reads."""
    size = torch.finfo(model.dtype).bits // 8
    h = model.config.hidden_size
    out = 0.0
    for layer in model.layers:
        block = layer.mlp
        if isinstance(block, MoEBlock):
            out += block.top_k * 3 * h * block.inter * size
            if block.shared is not None:
                out += (
                    3
                    * h
                    * model.config.moe_intermediate_size
                    * model.config.n_shared_experts
                    * size
                )
    return out


def _cache_bytes(model: MoEForCausalLM, context: float) -> float:
    c = model.config
    size = torch.finfo(model.dtype).bits // 8
    return c.num_hidden_layers * context * (c.kv_lora_rank + c.qk_rope_head_dim) * size


def _median(xs: list[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return ys[n // 2] if n % 2 else 0.5 * (ys[n // 2 - 1] + ys[n // 2])


def run_formats(
    *, prompt_len: int = 16, decode: int = 64, bandwidth: float | None = None, seed: int = 0
) -> dict[str, Any]:
    """Decode figures for float32, bfloat16 and each low-precision format on the large config
    (see the module docstring). ``bandwidth`` (bytes/s) defaults to a fresh measurement."""
    if bandwidth is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from moe_speed import read_bandwidth

        bandwidth = read_bandwidth()
    config = MoEConfig.from_hf(large_hf_config(bos_token_id=None, eos_token_id=None))
    models: dict[str, MoEForCausalLM] = {"float32": MoEForCausalLM(config, seed=seed).eval()}
    models["bfloat16"] = MoEForCausalLM(config, seed=seed).to(torch.bfloat16).eval()
    convert_s: dict[str, float] = {}
    for fmt in FORMATS:
        t0 = time.perf_counter()
        m = MoEForCausalLM(config, seed=seed).to(torch.bfloat16).eval()
        models[fmt] = quantize_experts(m, fmt, shared=True)  # type: ignore[arg-type]
        convert_s[fmt] = time.perf_counter() - t0
    # The same formats with the rest of the model in fp32: their logit error is the experts'
    # quantisation error alone (the bf16 rows add the bf16 model's own error).
    for fmt in FORMATS:
        m = MoEForCausalLM(config, seed=seed).eval()
        models[f"{fmt}_rest_float32"] = quantize_experts(m, fmt, shared=True)  # type: ignore[arg-type]

    gen = torch.Generator().manual_seed(seed + 1)
    prompt = torch.randint(0, config.vocab_size, (1, prompt_len), generator=gen)
    # The tokens every model decodes: fp32's greedy continuation.
    ref = models["float32"]
    with torch.inference_mode():
        cache = ref.new_cache(1, capacity=prompt_len + decode + 1)
        tok = ref(prompt, cache, logits_to_keep=1)[:, -1].argmax(-1, keepdim=True)
        tokens = [tok]
        for _ in range(decode - 1):
            tok = ref(tok, cache)[:, -1].argmax(-1, keepdim=True)
            tokens.append(tok)

    caches = {}
    logits: dict[str, list[torch.Tensor]] = {n: [] for n in models}
    wall: dict[str, list[float]] = {n: [] for n in models}
    cpu: dict[str, list[float]] = {n: [] for n in models}
    with torch.inference_mode():
        for name, m in models.items():
            caches[name] = m.new_cache(1, capacity=prompt_len + decode + 1)
            m(prompt, caches[name], logits_to_keep=1)
            m(tokens[0], m.new_cache(1, capacity=2))  # warm the step path's buffers
        for start in range(0, decode, _BLOCK):
            for name, m in models.items():
                for tok in tokens[start : start + _BLOCK]:
                    c0, t0 = time.thread_time(), time.perf_counter()
                    out = m(tok, caches[name])
                    wall[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.thread_time() - c0)
                    logits[name].append(out[0, -1].float())
    ref_logits = torch.stack(logits["float32"])
    context = prompt_len + decode / 2
    results: dict[str, Any] = {}
    dense_expert = _dense_expert_bytes(models["bfloat16"])
    for name, m in models.items():
        weights, banked = _format_weight_bytes(m)
        per_token = weights + _cache_bytes(m, context)
        step, step_cpu = _median(wall[name]), _median(cpu[name])
        diff = (torch.stack(logits[name]) - ref_logits).abs().amax(dim=-1) / ref_logits.std()
        row: dict[str, Any] = {
            "decode_tok_s": 1.0 / step,
            "decode_tok_s_cpu_time": 1.0 / step_cpu,
            "bytes_per_token": per_token,
            "bound_tok_s": bandwidth / per_token,
            "decode_fraction_of_bound": (1.0 / step) / (bandwidth / per_token),
            "decode_fraction_of_bound_cpu_time": (1.0 / step_cpu) / (bandwidth / per_token),
            "max_logit_error_vs_fp32": float(diff.max()),
            "median_step_logit_error_vs_fp32": float(diff.median()),
        }
        if banked:
            row["expert_bytes_per_token"] = banked
            row["expert_share_of_bf16_bytes"] = dense_expert / (
                float(models["bfloat16"].weight_bytes_per_token())
                + _cache_bytes(models["bfloat16"], context)
            )
            row["expert_share_of_bytes"] = banked / per_token
            if name in convert_s:
                row["convert_s"] = convert_s[name]
        results[name] = row
    bf16 = results["bfloat16"]
    for fmt in FORMATS:
        rest = results.pop(f"{fmt}_rest_float32")
        results[fmt]["rest_float32"] = rest
    rows = [*(results[n] for n in ("float32", "bfloat16", *FORMATS))]
    rows += [results[f]["rest_float32"] for f in FORMATS]
    for row in rows:
        row["decode_vs_bfloat16"] = row["decode_tok_s"] / bf16["decode_tok_s"]
        row["decode_vs_bfloat16_cpu_time"] = (
            row["decode_tok_s_cpu_time"] / bf16["decode_tok_s_cpu_time"]
        )
        row["bytes_vs_bfloat16"] = row["bytes_per_token"] / bf16["bytes_per_token"]
    results["read_bandwidth_gb_s"] = bandwidth / 1e9
    results["decode_tokens"] = decode
    # Whether one-row products ran through model/cpu_kernels.c (FP8 and INT4 experts read in
    # their own format there; AGENT_RUNTIME_NATIVE_KERNELS=0: torch's kernels, the "before").
    results["native_kernels"] = cpu_kernels.enabled()
    results["targets_met"] = {
        "fp8_decode_1.5x_bf16": results["fp8"]["decode_vs_bfloat16"] >= 1.5,
        "int4_decode_2x_bf16": results["int4"]["decode_vs_bfloat16"] >= 2.0,
    }
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="few decode steps, small bandwidth probe")
    ap.add_argument("--decode", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    decode = args.decode or (16 if args.quick else 64)
    bandwidth = None
    if args.quick:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from moe_speed import read_bandwidth

        bandwidth = read_bandwidth(1 << 27)
    results = run_formats(decode=decode, bandwidth=bandwidth)
    print(
        f"read bandwidth {results['read_bandwidth_gb_s']:.1f} GB/s, {decode} decode steps, "
        f"{args.threads} thread(s)"
    )
    print(
        f"{'model':>9} {'tok/s':>7} {'cpu tok/s':>9} {'MB/token':>9} {'bound':>7} {'of bound':>8} "
        f"{'vs bf16':>7} {'cpu vs bf16':>11} {'max err':>7} {'median err':>10}"
    )
    named = [(n, results[n]) for n in ("float32", "bfloat16", *FORMATS)]
    named += [(f"{f}+fp32", results[f]["rest_float32"]) for f in FORMATS]
    for name, r in named:
        print(
            f"{name:>9} {r['decode_tok_s']:7.2f} {r['decode_tok_s_cpu_time']:9.2f} "
            f"{r['bytes_per_token'] / 1e6:9.1f} {r['bound_tok_s']:7.1f} "
            f"{r['decode_fraction_of_bound']:8.1%} {r['decode_vs_bfloat16']:7.2f} "
            f"{r['decode_vs_bfloat16_cpu_time']:11.2f} {r['max_logit_error_vs_fp32']:7.3f} "
            f"{r['median_step_logit_error_vs_fp32']:10.3f}"
        )
    rows = {k: results.pop(k) for k in ("float32", "bfloat16", *FORMATS)}
    print(json.dumps({"large": rows, **results}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
