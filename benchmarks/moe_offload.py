"""Offloaded routed experts on a Kimi K2-width layer stack: decode time vs the bound of the bytes read.

The stack: ``--layers`` MoE layers of Kimi K2's width (hidden 7168, 384 experts of moe_intermediate
2048, top-8, one shared expert; attention with K2's MLA ranks but ``--heads`` heads, vocab 2048),
random weights, written once under ``--dir``: the resident part as a checkpoint (``main/``) and the
routed experts as an INT4 expert store (``store/``, :mod:`agent_runtime.model.offload_store`: the
CPU kernel's packed layout, group 32; ~8.5 GB of INT4 values + 0.5 GB of scales per layer) or, with
``--format bf16``, as dense bf16 weights. Random bytes are valid INT4 experts, so the store is
written directly (no quantisation); the values do not matter here, the bytes moved do.

It measures, in one run:

* the read bandwidth of the mapped store: cold (page cache dropped first: the disk) and warm (the
  same bytes again: the page cache, i.e. RAM), copying expert tensors out as a cache miss does;
* decode (one token per forward, random input tokens, ``--threads`` compute threads) with a budget
  of ``--budget`` resident experts (all layers together), under a skewed routing trace (a router
  bias ranking experts by a Zipf-like law, ``--skew``) and under uniform routing, prefetch on and
  off, LRU and LFU: ms per token (median; wall and this thread's CPU time), MB read per token, hit
  rate, prefetch hits, the time the forward stalled on reads, resident memory (RSS, split into
  anonymous and file pages, and the bank's own count);
* ``resident_ms``: the same decode with every expert it needs already resident (a short token
  sequence replayed: all hits), the compute the offloading adds its reads to;

and prints, per configuration, the bound ``read bytes per token / bandwidth`` (warm and cold), the
ideal ``max(resident compute, reads)`` a perfect overlap would reach, and the fraction of it
reached. The page cache is dropped before each configuration, so each starts cold; an expert read
again later may come from the page cache (how much: compare ``read_mb_per_tok`` at the two bounds).

    python benchmarks/moe_offload.py                 # 3 K2-width layers (~28 GB in /tmp)
    python benchmarks/moe_offload.py --quick         # a narrow stack, a few tokens

The last line is one JSON object with every number under ``offload``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agent_runtime.model.config import MoEConfig
from agent_runtime.model.moe import MoEBlock
from agent_runtime.model.offload import (
    MappedSafetensors,
    OffloadConfig,
    expert_offload,
    load_offloaded,
)
from agent_runtime.model.offload_store import INDEX_NAME, SafetensorsWriter, int4_store_entries
from agent_runtime.model.transformer import MoEForCausalLM

GROUP = 32


def stack_config(args: argparse.Namespace) -> dict[str, Any]:
    """The HF config of the stack (K2's MLA ranks and routing; ``args`` set the widths)."""
    return {
        "model_type": "kimi_k2",
        "vocab_size": 2048,
        "hidden_size": args.hidden,
        "intermediate_size": 4 * args.inter,
        "moe_intermediate_size": args.inter,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "q_lora_rank": 1536,
        "kv_lora_rank": 512,
        "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64,
        "v_head_dim": 128,
        "n_routed_experts": args.experts,
        "num_experts_per_tok": args.top_k,
        "n_shared_experts": 1,
        "first_k_dense_replace": 0,
        "routed_scaling_factor": 2.827,
        "norm_topk_prob": True,
        "max_position_embeddings": 4096,
        "rope_theta": 50000.0,
        "rms_norm_eps": 1e-6,
    }


# ---------------------------------------------------------------------------- writing the stack
def _write_resident(
    main: Path, cfg: dict[str, Any], gen: torch.Generator, residual_scale: float
) -> None:
    """config.json and the non-expert weights (bf16; norms 1, router bias 0)."""
    main.mkdir(parents=True, exist_ok=True)
    (main / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    model = MoEForCausalLM(MoEConfig.from_hf(cfg), init="meta")
    shapes = {k: s for k, s in model.hf_parameter_shapes().items() if ".mlp.experts." not in k}
    specs = [(k, torch.bfloat16, s) for k, s in shapes.items()]
    with SafetensorsWriter(main / "model.safetensors", specs) as w:
        for key, shape in shapes.items():
            if key.endswith("norm.weight"):
                t = torch.ones(shape)
            elif key.endswith("e_score_correction_bias"):
                t = torch.zeros(shape)
            elif key.endswith("mlp.gate.weight"):  # router logits of std ~1
                t = torch.randn(shape, generator=gen) / math.sqrt(shape[1])
            elif key == "model.embed_tokens.weight":
                # The residual stream's scale against each layer's update (weights of std
                # 0.5/sqrt(in)): how much routing drifts from one layer to the next, which is
                # what the next-layer predictor's accuracy depends on.
                t = torch.randn(shape, generator=gen) * residual_scale
            else:
                t = torch.randn(shape, generator=gen) * (0.5 / math.sqrt(shape[-1]))
            w.write(key, t.to(torch.bfloat16))
        w.close()


def _write_experts(store: Path, cfg: dict[str, Any], fmt: str, gen: torch.Generator) -> None:
    """One file per layer; random bytes for INT4 values, scales giving weights of std ~0.5/sqrt(in)."""
    store.mkdir(parents=True, exist_ok=True)
    h, inter, n = cfg["hidden_size"], cfg["moe_intermediate_size"], cfg["n_routed_experts"]
    pool = torch.randint(0, 256, (2 * 3 * h * inter,), dtype=torch.uint8, generator=gen)
    weight_map: dict[str, str] = {}
    for layer in range(cfg["num_hidden_layers"]):
        base = f"model.layers.{layer}.mlp.experts."
        if fmt == "int4":
            specs = [
                s for e in range(n) for s in int4_store_entries(f"{base}{e}.", h, inter, GROUP)
            ]
        else:
            specs = [
                (f"{base}{e}.{p}.weight", torch.bfloat16, shape)
                for e in range(n)
                for p, shape in (
                    ("gate_proj", (inter, h)),
                    ("up_proj", (inter, h)),
                    ("down_proj", (h, inter)),
                )
            ]
        name = f"experts-{layer:05d}.safetensors"
        with SafetensorsWriter(store / name, specs) as w:
            for key, dtype, shape in specs:
                numel = math.prod(shape)
                if key.endswith("int4_packed"):
                    start = int(torch.randint(0, pool.numel() - numel, (1,), generator=gen))
                    t = pool[start : start + numel].view(shape)
                elif key.endswith("int4_scale"):
                    # int4 values of std ~4.6: scale so the weight has std ~0.5/sqrt(in)
                    k_in = shape[1] * GROUP
                    t = torch.full(shape, 0.5 / math.sqrt(k_in) / 4.6).to(torch.bfloat16)
                else:
                    t = (torch.randn(shape, generator=gen) * (0.5 / math.sqrt(shape[1]))).to(dtype)
                w.write(key, t)
            w.close()
        weight_map.update(dict.fromkeys((s[0] for s in specs), name))
        print(
            f"  wrote layer {layer} experts ({(store / name).stat().st_size / 1e9:.2f} GB)",
            flush=True,
        )
    index = {"metadata": {"format": fmt}, "weight_map": weight_map}
    (store / INDEX_NAME).write_text(json.dumps(index), encoding="utf-8")


def ensure_stack(
    root: Path, cfg: dict[str, Any], fmt: str, residual_scale: float
) -> tuple[Path, Path]:
    """The stack under ``root``, written unless a stack of the same config is already there
    (only the resident part is rewritten when just ``residual_scale`` changed)."""
    marker = root / "stack.json"
    want = {"config": cfg, "format": fmt, "group": GROUP, "residual_scale": residual_scale}
    main, store = root / "main", root / "store"
    if marker.is_file():
        have = json.loads(marker.read_text())
        if {**have, "residual_scale": residual_scale} == want and have != want:
            _write_resident(main, cfg, torch.Generator().manual_seed(0), residual_scale)
            marker.write_text(json.dumps(want))
    if marker.is_file() and json.loads(marker.read_text()) == want:
        return main, store
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    _write_resident(main, cfg, gen, residual_scale)
    _write_experts(store, cfg, fmt, gen)
    marker.write_text(json.dumps(want))
    print(f"  stack written in {time.perf_counter() - t0:.0f} s", flush=True)
    return main, store


# ---------------------------------------------------------------------------- measuring
def _memory() -> dict[str, float]:
    """This process's resident memory in MB: total, anonymous, file-backed (mapped pages)."""
    out: dict[str, float] = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            for name, key in (
                ("VmRSS", "rss_mb"),
                ("RssAnon", "rss_anon_mb"),
                ("RssFile", "rss_file_mb"),
            ):
                if line.startswith(name + ":"):
                    out[key] = int(line.split()[1]) / 1024
    return out


def read_bandwidth(store: Path, target_bytes: int) -> dict[str, float]:
    """Bytes/s copying expert tensors out of the mapped store: cold (page cache dropped: the
    disk), then the same tensors warm (the page cache), then a RAM-to-RAM copy of as many bytes."""
    ckpt = MappedSafetensors(store)
    keys, total = [], 0
    for key in sorted(ckpt.keys()):
        if total >= target_bytes:
            break
        keys.append(key)
        total += ckpt.nbytes(key)
    biggest = max(ckpt.nbytes(k) for k in keys)
    buf = torch.empty(biggest, dtype=torch.uint8)
    buf.fill_(0)
    out: dict[str, float] = {"probe_bytes": float(total)}
    ckpt.drop_page_cache()
    for name in ("cold", "warm"):
        t0 = time.perf_counter()
        for key in keys:
            view = ckpt.view(key).reshape(-1).view(torch.uint8)
            buf[: view.numel()].copy_(view)
        out[f"{name}_bytes_per_s"] = total / (time.perf_counter() - t0)
        ckpt.release(keys)  # the next pass faults the pages in again, as a miss does
    src = torch.empty(total, dtype=torch.uint8).fill_(1)
    dst = torch.empty(total, dtype=torch.uint8).fill_(0)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    out["ram_copy_bytes_per_s"] = total / best
    ckpt.close()
    return out


def set_routing(model: MoEForCausalLM, kind: str, skew: float, seed: int) -> None:
    """Router bias: 0 (uniform) or ``-skew * log(rank + 1)`` over a random ranking per layer
    (a Zipf-like popularity: a few experts picked often, a long tail rarely)."""
    gen = torch.Generator().manual_seed(seed)
    for layer in model.layers:
        block = layer.mlp
        if not isinstance(block, MoEBlock):
            continue
        with torch.no_grad():
            if kind == "uniform":
                block.gate_bias.zero_()
            else:
                rank = torch.randperm(block.n_experts, generator=gen).float()
                block.gate_bias.copy_(-skew * torch.log1p(rank))


def _tokens(n: int, vocab: int, seed: int) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def decode(model: MoEForCausalLM, tokens: list[int]) -> dict[str, list[float]]:
    """One forward per token (a fresh cache), timed by the wall clock and this thread's CPU."""
    cache = model.new_cache(1, capacity=len(tokens) + 1)
    offload = expert_offload(model)
    wall, cpu, read, stall = [], [], [], []
    for tok in tokens:
        before = offload.stats()
        c0, t0 = time.thread_time(), time.perf_counter()
        model(torch.tensor([[tok]]), cache)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        after = offload.stats()
        read.append(after.cache.bytes_loaded - before.cache.bytes_loaded)
        stall.append(after.demand_load_s - before.demand_load_s)
    return {"wall": wall, "cpu": cpu, "read": read, "stall": stall}


def _count_routing(model: MoEForCausalLM, on: bool) -> float:
    """Turn the router's selection counts on (returns 0) or read them and turn them off: the
    share of selections that went to the 10% most selected experts, averaged over layers."""
    blocks = [layer.mlp for layer in model.layers if isinstance(layer.mlp, MoEBlock)]
    shares = []
    for b in blocks:
        if on:
            b.load_counts = torch.zeros(b.n_experts, dtype=torch.int64)
            continue
        assert b.load_counts is not None
        counts = b.load_counts.sort(descending=True).values
        shares.append(float(counts[: max(1, b.n_experts // 10)].sum() / counts.sum()))
        b.load_counts = None
    return statistics.mean(shares) if shares else 0.0


def run_config(
    main: Path,
    store: Path,
    config: OffloadConfig,
    *,
    routing: str,
    skew: float,
    warmup: list[int],
    measured: list[int],
    bw: dict[str, float],
) -> dict[str, Any]:
    model = load_offloaded(main, config)
    set_routing(model, routing, skew, seed=1)
    offload = expert_offload(model)
    MappedSafetensors(store).drop_page_cache()
    decode(model, warmup)  # fills the cache (cold reads)
    offload.wait_prefetch()
    offload.reset_stats()
    _count_routing(model, True)
    d = decode(model, measured)
    share = _count_routing(model, False)
    offload.wait_prefetch()
    s = offload.stats()
    mem = _memory()
    n = len(measured)
    ms = statistics.median(d["wall"]) * 1e3
    read_per_tok = sum(d["read"]) / n
    out: dict[str, Any] = {
        "routing": routing,
        "policy": config.policy,
        "prefetch": config.prefetch,
        "budget_experts": config.max_experts,
        "top10pct_share": share,
        "ms_per_tok": ms,
        "mean_ms_per_tok": statistics.mean(d["wall"]) * 1e3,
        "cpu_ms_per_tok": statistics.median(d["cpu"]) * 1e3,
        "tok_s": 1e3 / ms,
        "read_mb_per_tok": read_per_tok / 1e6,
        "stall_ms_per_tok": statistics.mean(d["stall"]) * 1e3,
        "hit_rate": s.cache.hit_rate,
        "misses_per_tok": s.cache.misses / n,
        "prefetch_loads_per_tok": s.cache.prefetch_loads / n,
        "prefetch_hits_per_tok": s.cache.prefetch_hits / n,
        "prefetch_late_per_tok": s.prefetch_late / n,
        "prefetch_unused_per_tok": s.cache.prefetch_unused / n,
        "prefetch_accuracy": (s.cache.prefetch_hits + s.prefetch_late)
        / max(1, s.cache.prefetch_loads),
        "resident_experts": s.resident_experts,
        "resident_expert_mb": s.resident_bytes / 1e6,
        **mem,
        "bound_ms_warm": read_per_tok / bw["warm_bytes_per_s"] * 1e3,
        "bound_ms_cold": read_per_tok / bw["cold_bytes_per_s"] * 1e3,
    }
    offload.close()
    del model, offload
    gc.collect()
    return out


def resident_ms(main: Path, store: Path, tokens: list[int], routing: str, skew: float) -> float:
    """Median ms per token with every expert the tokens need already resident (second pass)."""
    model = load_offloaded(main, OffloadConfig(experts_dir=store, prefetch=False))
    set_routing(model, routing, skew, seed=1)
    decode(model, tokens)
    offload = expert_offload(model)
    offload.reset_stats()
    d = decode(model, tokens)
    assert offload.stats().cache.misses == 0
    offload.close()
    del model, offload
    gc.collect()
    return statistics.median(d["wall"]) * 1e3


# ---------------------------------------------------------------------------- full K2 on paper
K2_CONFIG = (
    Path(__file__).resolve().parent.parent / "tests/data/model_configs/kimi_k2_instruct.config.json"
)
GB = 1e9


@dataclass(frozen=True)
class Machine:
    """A host for the paper estimate; bandwidths in bytes/s (what one token's reads see)."""

    name: str
    gpu_bytes: float
    ram_bytes: float
    hbm_bw: float
    pcie_bw: float
    ram_bw: float
    disk_bw: float
    gpu_reserve: float = 4 * GB  # activations, workspaces, CUDA context
    ram_reserve: float = 32 * GB  # OS and the process itself


MACHINES = (
    # One H100-class GPU (HBM3 ~3 TB/s; 2.5 assumed), PCIe 5 x16 (~50 GB/s achieved), one DDR5
    # socket (~250 GB/s), one PCIe 4 NVMe (~7 GB/s).
    Machine("80 GB GPU + 512 GB RAM", 80 * GB, 512 * GB, 2.5e12, 50 * GB, 250 * GB, 7 * GB),
    # One 24 GB consumer GPU (GDDR6X ~1 TB/s), the same PCIe, DDR5 and NVMe.
    Machine("24 GB GPU + 1 TB RAM", 24 * GB, 1024 * GB, 1.0e12, 50 * GB, 250 * GB, 7 * GB, 2 * GB),
)


def k2_parts(cfg: MoEConfig, context: int) -> dict[str, float]:
    """Bytes of each part of the model (bf16 weights, fp32 router, INT4 routed experts with one
    bf16 scale per 32 weights, the bf16 MLA cache of ``context`` tokens) and per-token reads."""
    h, heads = cfg.hidden_size, cfg.num_attention_heads
    qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
    q = h * cfg.q_lora_rank + cfg.q_lora_rank * heads * qk if cfg.q_lora_rank else h * heads * qk
    kv = h * (cfg.kv_lora_rank + cfg.qk_rope_head_dim)
    kv += cfg.kv_lora_rank * heads * (cfg.qk_nope_head_dim + cfg.v_head_dim)
    attn = q + kv + heads * cfg.v_head_dim * h
    layers = cfg.num_hidden_layers
    moe_layers = sum(cfg.is_moe_layer(i) for i in range(layers))
    dense_layers = layers - moe_layers
    expert_params = 3 * h * cfg.moe_intermediate_size
    parts = {
        "attention": 2.0 * attn * layers,
        "dense_mlp": 2.0 * 3 * h * cfg.intermediate_size * dense_layers,
        "shared_experts": 2.0 * expert_params * cfg.n_shared_experts * moe_layers,
        "lm_head": 2.0 * cfg.vocab_size * h,
        "router": 4.0 * (h + 1) * cfg.n_routed_experts * moe_layers,
        "kv_cache": 2.0 * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * layers * context,
    }
    expert = expert_params * (0.5 + 2 / 32)
    return {
        **parts,
        "resident": sum(parts.values()),
        "embedding": 2.0 * cfg.vocab_size * h,  # kept in CPU RAM: one row per token
        "expert": expert,
        "n_experts": float(cfg.n_routed_experts * moe_layers),
        "routed_all": expert * cfg.n_routed_experts * moe_layers,
        "routed_per_token": expert * cfg.num_experts_per_tok * moe_layers,
    }


def paper_plan(
    machine: Machine,
    parts: dict[str, float],
    *,
    skewed: tuple[float, float] | None,
    efficiency: float | None,
) -> dict[str, Any]:
    """Where each part lives and the bound tok/s on ``machine``: resident weights and the cache on
    the GPU, as many routed experts as fit in the GPU's remaining memory (the expert cache), the
    rest in RAM (the page cache of the mapped checkpoint) and what RAM cannot hold on NVMe. This
    implementation computes every expert on the GPU, so a miss crosses PCIe (and NVMe first, for
    the part not in RAM); the bound adds the three transfer times (no overlap) and, with perfect
    overlap, takes the largest. For comparison: a miss computed on the CPU where the expert
    lives (KTransformers' split, not implemented here) reads it at DDR bandwidth instead."""
    # Resident parts that do not fit the GPU stay in RAM and are computed there, largest first.
    on_gpu, on_cpu = parts["resident"], []
    for name in ("lm_head", "shared_experts", "dense_mlp"):
        if on_gpu + machine.gpu_reserve <= machine.gpu_bytes:
            break
        on_gpu -= parts[name]
        on_cpu.append(name)
    cpu_resident = parts["resident"] - on_gpu
    gpu_free = machine.gpu_bytes - machine.gpu_reserve - on_gpu
    gpu_experts = max(0.0, min(parts["n_experts"], gpu_free // parts["expert"]))
    rest = parts["routed_all"] - gpu_experts * parts["expert"]
    ram_for_experts = max(
        0.0, machine.ram_bytes - machine.ram_reserve - parts["embedding"] - cpu_resident
    )
    in_ram = min(rest, ram_for_experts)
    ram_share = in_ram / rest if rest else 1.0
    per_tok = parts["routed_per_token"]
    out: dict[str, Any] = {
        "machine": machine.name,
        "resident_gpu_gb": on_gpu / GB,
        "resident_cpu_parts": on_cpu,
        "resident_fits_gpu": gpu_free >= 0,
        "gpu_experts": int(gpu_experts),
        "gpu_expert_share": gpu_experts / parts["n_experts"],
        "ram_expert_gb": in_ram / GB,
        "disk_expert_gb": (rest - in_ram) / GB,
        "bytes_per_token_gb": (parts["resident"] + per_tok) / GB,
        "routed_per_token_gb": per_tok / GB,
    }
    rates = {"uniform": gpu_experts / parts["n_experts"]}
    # A hit rate measured at a budget of ``share`` of all experts holds for a cache at least
    # that large (a larger one does better; not counted).
    if skewed is not None and gpu_experts / parts["n_experts"] >= skewed[1]:
        rates["skewed"] = max(rates["uniform"], skewed[0])
    for name, hit in rates.items():
        miss = per_tok * (1 - hit)
        t_hbm = (on_gpu + per_tok * hit) / machine.hbm_bw
        t_cpu = cpu_resident / machine.ram_bw
        t_pcie = miss / machine.pcie_bw
        t_disk = miss * (1 - ram_share) / machine.disk_bw
        serial = t_hbm + t_cpu + t_pcie + t_disk
        overlap = max(t_hbm + t_cpu, t_pcie, t_disk)
        cpu_compute = t_hbm + t_cpu + miss * ram_share / machine.ram_bw + t_disk
        row = {
            "hit_rate": hit,
            "hbm_ms": t_hbm * 1e3,
            "cpu_resident_ms": t_cpu * 1e3,
            "pcie_ms": t_pcie * 1e3,
            "disk_ms": t_disk * 1e3,
            "bound_tok_s": 1 / serial,
            "bound_tok_s_overlapped": 1 / overlap,
            "bound_tok_s_experts_on_cpu": 1 / cpu_compute,
        }
        if efficiency is not None:
            row["expected_tok_s"] = efficiency / serial
        out[name] = row
    return out


def plan_table(plans: list[dict[str, Any]], efficiency: float | None) -> str:
    """The README table (markdown)."""
    lines = [
        "| machine | resident bf16 on the GPU | experts on GPU | experts in RAM / NVMe | bytes/token "
        "| routing | GPU hit rate | bound tok/s (serial / overlapped) | experts computed on CPU "
        "| expected tok/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in plans:
        for name in ("uniform", "skewed"):
            if name not in p:
                continue
            r = p[name]
            exp = f"{r['expected_tok_s']:.2f}" if efficiency is not None else "-"
            lines.append(
                f"| {p['machine']} | {p['resident_gpu_gb']:.1f} GB"
                f"{' (' + ', '.join(p['resident_cpu_parts']) + ' in RAM)' if p['resident_cpu_parts'] else ''} "
                f"| {p['gpu_experts']} ({p['gpu_expert_share']:.1%}) "
                f"| {p['ram_expert_gb']:.0f} / {p['disk_expert_gb']:.0f} GB "
                f"| {p['bytes_per_token_gb']:.1f} GB ({p['routed_per_token_gb']:.1f} routed) "
                f"| {name} | {r['hit_rate']:.1%} | {r['bound_tok_s']:.2f} / {r['bound_tok_s_overlapped']:.2f} "
                f"| {r['bound_tok_s_experts_on_cpu']:.1f} | {exp} |"
            )
    return "\n".join(lines)


def paper(
    skewed: tuple[float, float] | None, efficiency: float | None, context: int
) -> dict[str, Any]:
    """The full-K2 table; ``skewed``: (hit rate, at a budget of this share of all experts)."""
    cfg = MoEConfig.from_hf(json.loads(K2_CONFIG.read_text(encoding="utf-8")))
    parts = k2_parts(cfg, context)
    plans = [paper_plan(m, parts, skewed=skewed, efficiency=efficiency) for m in MACHINES]
    print(f"\nFull Kimi K2 on paper (context {context}; efficiency {efficiency}):")
    print(plan_table(plans, efficiency))
    return {
        "parts_gb": {k: v / GB for k, v in parts.items() if k != "n_experts"},
        "machines": plans,
    }


def main(argv: list[str] | None = None) -> None:
    summary = run(argv)
    print(json.dumps({"offload": summary}))


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """The whole benchmark for these command-line arguments; returns what ``main`` prints under
    ``offload`` (``moe_speed.py --offload`` merges it into its own report)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dir", default="/tmp/moe_offload_k2", help="where the stack is written")
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--hidden", type=int, default=7168)
    p.add_argument("--inter", type=int, default=2048)
    p.add_argument("--experts", type=int, default=384)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--format", choices=("int4", "bf16"), default="int4")
    p.add_argument(
        "--budget",
        type=float,
        default=0.09,
        help="resident experts: a fraction of all (< 1) or a count",
    )
    p.add_argument(
        "--skew", type=float, default=0.05, help="router bias strength of the skewed trace"
    )
    p.add_argument(
        "--tokens", type=int, default=24, help="measured decode tokens per configuration"
    )
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--residual-scale",
        type=float,
        default=1.0,
        help="std of the embedding (the residual stream) against the layers' updates",
    )
    p.add_argument("--bw-bytes", type=float, default=2e9, help="bytes read by the bandwidth probe")
    p.add_argument("--quick", action="store_true", help="narrow stack, few tokens (smoke test)")
    p.add_argument("--remove", action="store_true", help="delete the stack at the end")
    p.add_argument("--context", type=int, default=4096, help="context length of the paper estimate")
    p.add_argument(
        "--plan",
        nargs=3,
        type=float,
        metavar=("HIT_RATE", "AT_SHARE", "EFFICIENCY"),
        help="only print the full-K2 paper estimate: a skewed-trace hit rate measured at a "
        "budget of AT_SHARE of all experts, and this implementation's efficiency",
    )
    args = p.parse_args(argv)
    if args.plan:
        hit, share, eff = args.plan
        return {"paper": paper((hit, share), eff, args.context)}
    if args.quick:
        args.hidden, args.inter, args.experts = 1024, 256, 64
        args.tokens, args.warmup, args.bw_bytes = 8, 4, 2e8
        if args.dir == p.get_default("dir"):
            args.dir = "/tmp/moe_offload_quick"
    torch.set_num_threads(args.threads)
    cfg = stack_config(args)
    root = Path(args.dir)
    print(
        f"stack: {args.layers} layers, hidden {args.hidden}, {args.experts} experts x {args.inter}, "
        f"top-{args.top_k}, {args.format} experts in {root}",
        flush=True,
    )
    main_dir, store = ensure_stack(root, cfg, args.format, args.residual_scale)
    n_all = args.layers * args.experts
    budget = int(args.budget * n_all) if args.budget < 1 else int(args.budget)
    ckpt = MappedSafetensors(store)
    expert_bytes = sum(ckpt.nbytes(k) for k in ckpt.keys()) / n_all
    store_bytes = sum(f.stat().st_size for f in ckpt.files)
    ckpt.close()
    bw = read_bandwidth(store, int(args.bw_bytes))
    print(
        f"read bandwidth of the mapped store: cold {bw['cold_bytes_per_s'] / 1e9:.2f} GB/s, "
        f"warm {bw['warm_bytes_per_s'] / 1e9:.2f} GB/s; RAM copy {bw['ram_copy_bytes_per_s'] / 1e9:.2f} GB/s",
        flush=True,
    )
    warm_toks = _tokens(args.warmup, cfg["vocab_size"], 10)
    toks = _tokens(args.tokens, cfg["vocab_size"], 11)

    res_ms = {
        r: resident_ms(main_dir, store, toks[:6], r, args.skew) for r in ("skewed", "uniform")
    }
    configs = [
        ("skewed", "lfu", True),
        ("skewed", "lfu", False),
        ("skewed", "lru", True),
        ("uniform", "lru", True),
        ("uniform", "lru", False),
    ]
    runs = []
    for routing, policy, prefetch in configs:
        oc = OffloadConfig(experts_dir=store, max_experts=budget, policy=policy, prefetch=prefetch)  # type: ignore[arg-type]
        r = run_config(
            main_dir,
            store,
            oc,
            routing=routing,
            skew=args.skew,
            warmup=warm_toks,
            measured=toks,
            bw=bw,
        )
        r["resident_ms_per_tok"] = res_ms[routing]
        ideal = max(res_ms[routing], r["bound_ms_warm"])
        r["ideal_ms_warm"] = ideal
        r["fraction_of_ideal_warm"] = ideal / r["ms_per_tok"]
        r["fraction_of_serial_warm"] = (res_ms[routing] + r["bound_ms_warm"]) / r["ms_per_tok"]
        r["fraction_of_read_bound_warm"] = r["bound_ms_warm"] / r["ms_per_tok"]
        r["fraction_of_read_bound_cold"] = r["bound_ms_cold"] / r["ms_per_tok"]
        runs.append(r)
        print(
            f"{routing:8s} {policy} prefetch={'on ' if prefetch else 'off'}: {r['ms_per_tok']:7.1f} ms/tok "
            f"({r['tok_s']:.2f} tok/s), read {r['read_mb_per_tok']:7.1f} MB/tok, hit {r['hit_rate']:.2f}, "
            f"top-10% share {r['top10pct_share']:.2f}, prefetch hits {r['prefetch_hits_per_tok']:.1f}/tok "
            f"(accuracy {r['prefetch_accuracy']:.2f}), stall {r['stall_ms_per_tok']:.1f} ms; "
            f"bound {r['bound_ms_warm']:.1f} ms warm / {r['bound_ms_cold']:.1f} ms cold, resident "
            f"{res_ms[routing]:.1f} ms -> {r['fraction_of_ideal_warm']:.2f} of max(resident, warm reads); "
            f"RSS {r['rss_mb']:.0f} MB ({r['resident_experts']} experts, {r['resident_expert_mb']:.0f} MB)",
            flush=True,
        )
    summary = {
        "format": args.format,
        "stack": {
            k: cfg[k]
            for k in (
                "hidden_size",
                "moe_intermediate_size",
                "n_routed_experts",
                "num_experts_per_tok",
                "num_hidden_layers",
            )
        },
        "store_gb": store_bytes / 1e9,
        "expert_mb": expert_bytes / 1e6,
        "budget_experts": budget,
        "threads": args.threads,
        "bandwidth": bw,
        "resident_ms_per_tok": res_ms,
        "runs": runs,
    }
    # The paper estimate: the skewed trace's hit rate at this budget fraction (LFU, prefetch on),
    # and this implementation's efficiency on the read-bound trace (uniform, prefetch on): the
    # serial bound (resident compute + warm reads) over the measured time.
    skewed = next(
        r for r in runs if r["routing"] == "skewed" and r["policy"] == "lfu" and r["prefetch"]
    )
    uniform = next(r for r in runs if r["routing"] == "uniform" and r["prefetch"])
    summary["paper"] = paper(
        (skewed["hit_rate"], budget / n_all), uniform["fraction_of_serial_warm"], args.context
    )
    if args.remove:
        shutil.rmtree(root)
    return summary


if __name__ == "__main__":
    sys.exit(main())
