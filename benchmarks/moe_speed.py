"""Speed of the local MoE engine against transformers' DeepseekV3ForCausalLM on the same weights.

Both models run in this process, one CPU thread, on identical weights (ours is loaded from the
reference's state dict through the checkpoint contract). For each config and dtype it measures

* prefill: one forward over a ``--prefill`` token prompt, keeping only the last logits (what
  generation needs; transformers gets ``logits_to_keep=1`` too, and both ``generate()``s prefill
  this way). Both fill the cache for every prompt token. Ours also skips the work whose result
  ``logits_to_keep`` discards: in the last layer only the kept positions are queried and run
  through the MLP/experts (their cache rows are still written), while transformers computes the
  whole last layer and drops all but one row at the lm_head. Same logits, same cache;
* decode: ``--decode`` greedy steps after that prompt, one token per forward with the cache;

and prints tokens/s, our/transformers ratios, and decode as a fraction of the memory-bandwidth
bound: weight and cache bytes one decode token must read, over the read bandwidth of this machine
measured in the same run (best pass of a sum and a matrix-vector product over 1 GiB, far beyond
the last-level cache). Our weights are allocated in transparent huge pages where Linux allows
(``advise_huge_pages``: ~3-8% faster reads of the 1-3 MB expert matrices); the probe's buffer is
advised the same way, so the bound is the best this thread can read either way.

The bound's method, stated: bytes one decode token needs (every active weight once in the model's
dtype, fp32 router, one embedding row, and the latent cache rows it attends over: ``decode_bytes_
per_token``) divided by the read bandwidth measured in the same run with the same number of threads
(``--threads``: the probe's sum runs on that many threads); as the probe varies between rows on a
shared host, each row also gets its fraction at the best probe of its thread count
(``decode_fraction_of_best_bound``, which the 80% targets use). Beside it, ``gemv_read_GBps`` is the
rate torch's own GEMV kernel reaches on the model's largest matrix (the lm_head, in the layout the
model stores it) with those threads: the ceiling for any decode built on torch's kernels, so
``decode_fraction_of_gemv_bound`` separates kernel speed from everything else. Decode runs its
one-row products through the native kernels of ``model/cpu_kernels.c`` where they build (the JSON
says so: ``native_kernels``; ``AGENT_RUNTIME_NATIVE_KERNELS=0`` runs torch's instead, the
"before"), and ``native_gemv_read_GBps`` is the same lm_head probe through them. Where the
model allows, each decode step is one native call for all decoder layers (``model/decode_step.c``,
``fused_decode`` in the JSON); the same model's layer-by-layer path is timed beside it in the same
run (``layer_path_decode_tok_s``, ``fused_speedup``).

For reduced-precision dtypes it also reports the last-position prefill logit error of ours and of
transformers in that dtype against transformers in fp32 on the same weights (max abs difference
over the fp32 logits' standard deviation): greedy agreement between two bf16 implementations says
little on random weights, whose top logits are close (one flip and the sequences diverge).

Timing on a shared machine: the two models take turns (prefill alternately, best of 3; decode in
blocks of 8 steps), so bursts from other processes hit both. Every figure exists twice: by the
wall clock (decode: median step) and by this thread's CPU time (which leaves out time the core
was given to other processes). transformers' own ``generate()`` decode rate is also reported.

Configs: (a) the tiny test config; (b) a "large" one (hidden 1024, 8 layers, 64 experts top-6,
moe_intermediate 256, vocab 32k; 446M parameters, 94M active per token). On a CUDA machine it also
times a Kimi-K2-shaped MoE layer (hidden 7168, 384 experts top-8, moe_intermediate 2048, bf16)
against the HBM-bandwidth and bf16-FLOP ceilings and transformers' layer.

The last printed line is one JSON object with every number.

    python benchmarks/moe_speed.py            # full run (several minutes)
    python benchmarks/moe_speed.py --configs large --threads 1,2   # 1 and 2 threads
    python benchmarks/moe_speed.py --quick    # smoke test: small token counts
    python benchmarks/moe_speed.py --offload full   # with the K2-width offload stack (~28 GB)
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
import time
from typing import Any

import torch

from agent_runtime.model import cpu_kernels
from agent_runtime.model.config import MoEConfig
from agent_runtime.model.layers import advise_huge_pages
from agent_runtime.model.presets import large_hf_config, tiny_hf_config
from agent_runtime.model.transformer import MoEForCausalLM

# The shared test configs (model/presets.py), without bos/eos: nothing here may stop on an eos
# token (transformers' generate() is also given eos_token_id=None), every run decodes all steps.
TINY: dict[str, Any] = tiny_hf_config(bos_token_id=None, eos_token_id=None)
LARGE: dict[str, Any] = large_hf_config(bos_token_id=None, eos_token_id=None)


# ---------------------------------------------------------------------------- helpers
def build_reference(cfg: dict[str, Any], seed: int) -> Any:
    """transformers' model with eager experts and attention, random weights, a non-zero router
    bias (so selection and weighting really differ) and non-trivial norms."""
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    torch.manual_seed(seed)
    ref = DeepseekV3ForCausalLM(DeepseekV3Config(**cfg))
    ref.train(False)
    ref.set_experts_implementation("eager")
    ref.set_attn_implementation("eager")
    with torch.no_grad():
        for layer in ref.model.layers:
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None:
                gate.e_score_correction_bias.normal_(0.0, 0.05)
    return ref


def load_from_reference(ref: Any, cfg: dict[str, Any], dtype: torch.dtype) -> MoEForCausalLM:
    """Copy the reference weights into ours through the HF per-expert key layout."""
    model = MoEForCausalLM(MoEConfig.from_hf(cfg), dtype=dtype, init="empty")
    for key, value in ref.state_dict().items():
        if key.endswith("mlp.experts.gate_up_proj"):
            base = key[: -len("gate_up_proj")]
            inter = value.shape[1] // 2
            for e in range(value.shape[0]):
                model.load_hf_tensor(f"{base}{e}.gate_proj.weight", value[e, :inter])
                model.load_hf_tensor(f"{base}{e}.up_proj.weight", value[e, inter:])
        elif key.endswith("mlp.experts.down_proj"):
            base = key[: -len("down_proj")]
            for e in range(value.shape[0]):
                model.load_hf_tensor(f"{base}{e}.down_proj.weight", value[e])
        else:
            model.load_hf_tensor(key, value)
    missing = model.missing_hf_keys()
    if missing:
        raise RuntimeError(f"weights not loaded: {missing[:5]}")
    return model


_BW_BYTES = 1 << 30  # probe size; --quick lowers it (the number is then only indicative)


def read_bandwidth(nbytes: int | None = None, repeats: int = 3) -> float:
    """Bytes/s one thread reads from memory: the best of several passes of two read-only kernels
    (a sum and a matrix-vector product) over data far larger than the last-level cache."""
    nbytes = nbytes or _BW_BYTES
    # In transparent huge pages where available, like our model's weights (see
    # advise_huge_pages): the probe should measure the best this thread can read.
    big = torch.empty(nbytes // 4, dtype=torch.float32)
    advise_huge_pages(big)
    big.fill_(1.0)
    mat = big.view(-1, 4096)
    vec = torch.ones(4096, dtype=torch.float32)
    best = float("inf")
    for _ in range(repeats):
        for kernel in ("sum", "mv"):
            t0 = time.perf_counter()
            if kernel == "sum":
                big.sum()
            else:
                torch.mv(mat, vec)
            best = min(best, time.perf_counter() - t0)
    return nbytes / best


class _Ours:
    """Our model behind a prefill/step interface."""

    def __init__(self, model: MoEForCausalLM, capacity: int) -> None:
        self.model = model
        self.capacity = capacity

    def prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        self.cache = self.model.new_cache(1, capacity=self.capacity)
        logits: torch.Tensor = self.model(prompt, self.cache, logits_to_keep=1)
        return logits[:, -1]

    def step(self, tok: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(tok, self.cache)
        return logits[:, -1]


class _Reference:
    """transformers' model behind the same interface (its own DynamicCache)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)
        with torch.no_grad():
            out = self.model(prompt, cache=self.cache, use_cache=True, logits_to_keep=1)
        logits: torch.Tensor = out.logits
        return logits[:, -1]

    def step(self, tok: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits: torch.Tensor = self.model(tok, cache=self.cache, use_cache=True).logits
        return logits[:, -1]


def _interleaved(
    ours: _Ours, ref: _Reference, prompt: torch.Tensor, steps: int, rounds: int
) -> dict[str, Any]:
    """Prefill ``rounds`` times alternately (best of each), then decode greedily with the two
    models taking turns every ``_BLOCK`` steps, so a noisy neighbour slows both alike while each
    still runs a few consecutive steps as a real decode loop does (warm caches). Every phase is timed by the
    wall clock and by this thread's CPU time (which leaves out the time other processes held the
    core: on a shared, oversubscribed machine that is the fairer figure)."""
    pre: dict[str, list[float]] = {"ours": [], "ref": [], "ours_cpu": [], "ref_cpu": []}
    logits: dict[str, torch.Tensor] = {}
    models: tuple[tuple[str, _Ours | _Reference], ...] = (("ours", ours), ("ref", ref))
    for _ in range(rounds):
        for name, m in models:
            c0, t0 = time.thread_time(), time.perf_counter()
            logits[name] = m.prefill(prompt)
            pre[name].append(time.perf_counter() - t0)
            pre[name + "_cpu"].append(time.thread_time() - c0)
    toks = {n: logits[n].argmax(-1, keepdim=True) for n in logits}
    seq: dict[str, list[int]] = {n: [int(toks[n])] for n in toks}
    dec: dict[str, list[float]] = {"ours": [], "ref": [], "ours_cpu": [], "ref_cpu": []}
    for block_start in range(0, steps, _BLOCK):
        for name, m in models:
            for _ in range(min(_BLOCK, steps - block_start)):
                c0, t0 = time.thread_time(), time.perf_counter()
                out = m.step(toks[name])
                dec[name].append(time.perf_counter() - t0)
                dec[name + "_cpu"].append(time.thread_time() - c0)
                toks[name] = out.argmax(-1, keepdim=True)
                seq[name].append(int(toks[name]))
    return {"prefill": pre, "decode": dec, "tokens": seq, "logits": logits}


_BLOCK = 8


def _reference_generate_decode_cpu(
    model: Any, prompt: torch.Tensor, steps: int, prefill_cpu: float
) -> float:
    """Per-token decode CPU time of transformers' own ``generate`` (greedy), the way users run
    it: its total minus the prefill measured before. Reported beside the bare forward loop."""
    with torch.no_grad():
        c0 = time.thread_time()
        model.generate(
            prompt,
            max_new_tokens=steps + 1,
            min_new_tokens=steps + 1,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )
        total = time.thread_time() - c0
    return max(total - prefill_cpu, 1e-9) / steps


def _fused_vs_layer_path(ours: _Ours, token: int, blocks: int = 2) -> tuple[float | None, float]:
    """Median decode step (seconds) of the fused step and of the layer-by-layer path, continuing
    ``ours``' cache in alternating blocks of ``_BLOCK`` steps; the fused figure is ``None`` where
    the fused step does not apply to the model."""
    from agent_runtime.model.decode_step import DecodePlan, fused_decode

    times: dict[bool, list[float]] = {True: [], False: []}
    tok = torch.tensor([[token]])
    for _ in range(blocks):
        for on in (True, False):
            with fused_decode(on):
                for _ in range(_BLOCK):
                    t0 = time.perf_counter()
                    tok = ours.step(tok).argmax(-1, keepdim=True)
                    times[on].append(time.perf_counter() - t0)
    used = isinstance(ours.model._decode_plan, DecodePlan)
    return (_median(times[True]) if used else None), _median(times[False])


def _median(xs: list[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return ys[n // 2] if n % 2 else 0.5 * (ys[n // 2 - 1] + ys[n // 2])


def gemv_read_bandwidth(model: MoEForCausalLM, repeats: int = 5) -> float:
    """Bytes/s torch's GEMV kernel reads on the model's largest matrix (the lm_head, in the
    layout and dtype the model keeps it, beyond the last-level cache at the benchmark sizes),
    with the current number of threads: best of ``repeats``."""
    x = torch.ones(1, model.config.hidden_size, dtype=model.dtype)
    w = model.lm_head.data
    torch.nn.functional.linear(x, w)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.nn.functional.linear(x, w)
        best = min(best, time.perf_counter() - t0)
    return float(w.numel() * w.element_size()) / best


def native_gemv_read_bandwidth(model: MoEForCausalLM, repeats: int = 5) -> float | None:
    """The same probe as :func:`gemv_read_bandwidth` through the native kernel the decode uses
    (``cpu_kernels.xw``); ``None`` when the native kernels are off."""
    if not cpu_kernels.enabled():
        return None
    x = torch.ones(1, model.config.hidden_size, dtype=model.dtype)
    w = model.lm_head.data.t()
    cpu_kernels.xw(x, w)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        cpu_kernels.xw(x, w)
        best = min(best, time.perf_counter() - t0)
    return float(w.numel() * w.element_size()) / best


def _logit_error(logits: torch.Tensor, reference: torch.Tensor) -> float:
    """Max abs difference over the reference logits' standard deviation."""
    ref = reference.float()
    return float((logits.float() - ref).abs().max() / ref.std())


def decode_bytes_per_token(model: MoEForCausalLM, context: float) -> float:
    """Weights one decode token reads plus the latent cache rows it attends over."""
    c = model.config
    size = int(torch.finfo(model.dtype).bits) // 8
    cache = c.num_hidden_layers * context * (c.kv_lora_rank + c.qk_rope_head_dim) * size
    return float(model.weight_bytes_per_token() + cache)


def run_config(
    name: str,
    cfg: dict[str, Any],
    dtypes: list[torch.dtype],
    prefill: int,
    decode: int,
    rounds: int,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    ref32 = build_reference(cfg, seed=0)
    prompt = torch.randint(
        0, cfg["vocab_size"], (1, prefill), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():  # fp32 reference logits (last prompt position) for the error figures
        logits32 = ref32(prompt, logits_to_keep=1).logits[:, -1].float()
    threads = torch.get_num_threads()
    for dtype in dtypes:
        dname = str(dtype).replace("torch.", "")
        model = load_from_reference(ref32, cfg, dtype)
        # A copy: nn.Module.to converts in place, and ref32 must stay fp32 for later dtypes.
        ref_model = ref32 if dtype == torch.float32 else copy.deepcopy(ref32).to(dtype)
        ours = _Ours(model, prefill + decode + 1 + 4 * _BLOCK)
        ref = _Reference(ref_model)
        _interleaved(ours, ref, prompt[:, :16], 4, 1)  # warm-up: allocator, oneDNN primitives
        bw_before = read_bandwidth()
        run = _interleaved(ours, ref, prompt, decode, rounds)
        bw = max(bw_before, read_bandwidth())
        gen_cpu = _reference_generate_decode_cpu(
            ref_model, prompt, decode, min(run["prefill"]["ref_cpu"])
        )
        o_pre, r_pre = min(run["prefill"]["ours"]), min(run["prefill"]["ref"])
        o_pre_cpu, r_pre_cpu = min(run["prefill"]["ours_cpu"]), min(run["prefill"]["ref_cpu"])
        o_dec, r_dec = _median(run["decode"]["ours"]), _median(run["decode"]["ref"])
        o_mean = sum(run["decode"]["ours"]) / decode
        r_mean = sum(run["decode"]["ref"]) / decode
        o_cpu = sum(run["decode"]["ours_cpu"]) / decode
        r_cpu = sum(run["decode"]["ref_cpu"]) / decode
        o_tok, r_tok = run["tokens"]["ours"], run["tokens"]["ref"]
        agree = sum(1 for x, y in zip(o_tok, r_tok, strict=True) if x == y)
        first_diff = next(
            (i for i, (x, y) in enumerate(zip(o_tok, r_tok, strict=True)) if x != y), None
        )
        fused, layered = _fused_vs_layer_path(ours, run["tokens"]["ours"][-1])
        bytes_tok = decode_bytes_per_token(model, prefill + decode / 2)
        bound = bw / bytes_tok
        gemv_bw = gemv_read_bandwidth(model)
        native_bw = native_gemv_read_bandwidth(model)
        row = {
            "threads": threads,
            "prefill_tok_s": prefill / o_pre,
            "ref_prefill_tok_s": prefill / r_pre,
            "prefill_ratio": r_pre / o_pre,
            "decode_tok_s": 1.0 / o_dec,
            "ref_decode_tok_s": 1.0 / r_dec,
            "decode_ratio": r_dec / o_dec,
            "decode_tok_s_mean": 1.0 / o_mean,
            "ref_decode_tok_s_mean": 1.0 / r_mean,
            "decode_ratio_mean": r_mean / o_mean,
            "cpu_time": {
                "prefill_tok_s": prefill / o_pre_cpu,
                "ref_prefill_tok_s": prefill / r_pre_cpu,
                "prefill_ratio": r_pre_cpu / o_pre_cpu,
                "decode_tok_s": 1.0 / o_cpu,
                "ref_decode_tok_s": 1.0 / r_cpu,
                "decode_ratio": r_cpu / o_cpu,
                "decode_fraction_of_bound": (1.0 / o_cpu) / (bw / bytes_tok),
            },
            "read_bandwidth_GBps": bw / 1e9,
            "decode_bytes_per_token": bytes_tok,
            "decode_bound_tok_s": bound,
            "decode_fraction_of_bound": (1.0 / o_dec) / bound,
            "ref_decode_fraction_of_bound": (1.0 / r_dec) / bound,
            "gemv_read_GBps": gemv_bw / 1e9,
            "decode_fraction_of_gemv_bound": (1.0 / o_dec) / (gemv_bw / bytes_tok),
            "native_gemv_read_GBps": None if native_bw is None else native_bw / 1e9,
            "logit_error_vs_fp32": _logit_error(run["logits"]["ours"], logits32),
            "ref_logit_error_vs_fp32": _logit_error(run["logits"]["ref"], logits32),
            "ref_generate_decode_tok_s_cpu": 1.0 / gen_cpu,
            "decode_ratio_vs_ref_generate_cpu": gen_cpu / o_cpu,
            # The fused decode step (model/decode_step.c) against the layer-by-layer path on the
            # same weights and kernels, in the same run (median steps, alternating blocks).
            "fused_decode": fused is not None,
            "fused_decode_tok_s": None if fused is None else 1.0 / fused,
            "layer_path_decode_tok_s": 1.0 / layered,
            "fused_speedup": None if fused is None else layered / fused,
            "greedy_tokens_equal": agree,
            "greedy_first_difference": first_diff,
            "tokens_compared": len(o_tok),
        }
        results[dname] = row
        print(
            f"[{name} {dname}] prefill {row['prefill_tok_s']:.1f} tok/s vs ref {row['ref_prefill_tok_s']:.1f}"
            f" ({row['prefill_ratio']:.2f}x) | decode {row['decode_tok_s']:.2f} tok/s vs ref"
            f" {row['ref_decode_tok_s']:.2f} ({row['decode_ratio']:.2f}x; mean-based"
            f" {row['decode_ratio_mean']:.2f}x) | bound {bound:.2f} tok/s at {bw / 1e9:.1f} GB/s,"
            f" ours at {100 * row['decode_fraction_of_bound']:.0f}% (torch GEMV reads"
            f" {gemv_bw / 1e9:.1f} GB/s: {100 * row['decode_fraction_of_gemv_bound']:.0f}% of that bound)"
            f" | fused step {_speedup(row)} | greedy agree {agree}/{len(o_tok)}"
            f" | logit error vs fp32 {row['logit_error_vs_fp32']:.2e}"
            f" (transformers {row['ref_logit_error_vs_fp32']:.2e}) | {threads} thread(s)",
            flush=True,
        )
        cpu = row["cpu_time"]
        print(
            f"[{name} {dname}, thread CPU time] prefill {cpu['prefill_ratio']:.2f}x | decode"
            f" {cpu['decode_tok_s']:.2f} vs {cpu['ref_decode_tok_s']:.2f} tok/s ({cpu['decode_ratio']:.2f}x),"
            f" {100 * cpu['decode_fraction_of_bound']:.0f}% of bound | transformers generate()"
            f" decodes {row['ref_generate_decode_tok_s_cpu']:.2f} tok/s"
            f" ({row['decode_ratio_vs_ref_generate_cpu']:.2f}x)",
            flush=True,
        )
        del ours, ref, model
        if ref_model is not ref32:
            del ref_model
        gc.collect()
    del ref32
    gc.collect()
    return results


def _against_best_probe(per: dict[str, Any]) -> None:
    """The read probe of one thread count varies between the rows of one run (on a shared host,
    two threads measured 34 and 64 GB/s minutes apart): beside each row's own fraction, its
    fraction of the bound at the best probe any row of this thread count measured
    (``decode_fraction_of_best_bound``, the conservative figure the targets use)."""
    rows = [
        (f"{name} {dname}", row)
        for name, cfg in per.items()
        for dname, row in cfg.items()
        if "read_bandwidth_GBps" in row
    ]
    best = max((row["read_bandwidth_GBps"] for _, row in rows), default=0.0)
    for label, row in rows:
        scale = row["read_bandwidth_GBps"] / best
        row["best_read_bandwidth_GBps"] = best
        row["decode_fraction_of_best_bound"] = row["decode_fraction_of_bound"] * scale
        cpu = row["cpu_time"]
        cpu["decode_fraction_of_best_bound"] = cpu["decode_fraction_of_bound"] * scale
        print(
            f"[{label}] at the best probe of {row['threads']} thread(s), {best:.1f} GB/s:"
            f" {100 * row['decode_fraction_of_best_bound']:.0f}% of the bound",
            flush=True,
        )


def _speedup(row: dict[str, Any]) -> str:
    if row["fused_speedup"] is None:
        return "not used"
    return f"{row['fused_speedup']:.2f}x the layer path"


# ---------------------------------------------------------------------------- CUDA: one Kimi K2 MoE layer
def run_kimi_layer_cuda(
    quick: bool, device: str = "cuda", shape: dict[str, int] | None = None
) -> dict[str, Any]:
    """Kimi-K2-shaped MoE layer in bf16 on the GPU: ours (sharing transformers' expert storage, so
    only one copy of the 34 GB of experts exists) against transformers' DeepseekV3MoE."""
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE

    from agent_runtime.model.moe import MoEBlock

    dev = torch.device(device)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    kimi = {
        **LARGE,
        "hidden_size": 7168,
        "moe_intermediate_size": 2048,
        "n_routed_experts": 384,
        "num_experts_per_tok": 8,
        "n_shared_experts": 1,
        "routed_scaling_factor": 2.827,
        "first_k_dense_replace": 0,
    }
    if quick:
        kimi["n_routed_experts"] = 64
    if shape:  # smoke tests on small shapes
        kimi.update(shape)
    hcfg = DeepseekV3Config(**kimi)
    # transformers' fastest CUDA experts path (its default loops over experts in Python)
    hcfg._experts_implementation = "grouped_mm"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # build in bf16 directly: fp32 experts would be 68 GB
    try:
        with torch.device(dev):
            ref = DeepseekV3MoE(hcfg)
    finally:
        torch.set_default_dtype(previous)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.02)
        ref.gate.weight.data = ref.gate.weight.data.float()  # transformers keeps the router fp32
        ref.gate.e_score_correction_bias.normal_(0.0, 0.05)
    ours = MoEBlock(
        MoEConfig.from_hf(kimi), dtype=torch.bfloat16, device=torch.device("meta"), grouped=True
    )
    # Share the expert storage: transformers keeps [E, 2I, H] and [E, H, I], exactly our grouped
    # layout seen through transposed views, so only one copy of the experts exists.
    ours.w13 = torch.nn.Parameter(
        ref.experts.gate_up_proj.data.transpose(1, 2), requires_grad=False
    )
    ours.w2 = torch.nn.Parameter(ref.experts.down_proj.data.transpose(1, 2), requires_grad=False)
    ours.gate_w = torch.nn.Parameter(
        ref.gate.weight.data.float().t().contiguous(), requires_grad=False
    )
    ours.gate_bias = torch.nn.Parameter(
        ref.gate.e_score_correction_bias.data.float(), requires_grad=False
    )
    assert ours.shared is not None
    shared_gate_up = torch.cat(
        [ref.shared_experts.gate_proj.weight.data, ref.shared_experts.up_proj.weight.data]
    )
    ours.shared.w13 = torch.nn.Parameter(shared_gate_up.t().contiguous(), requires_grad=False)
    ours.shared.w2 = torch.nn.Parameter(
        ref.shared_experts.down_proj.weight.data.t().contiguous(), requires_grad=False
    )
    h, inter, k = kimi["hidden_size"], kimi["moe_intermediate_size"], kimi["num_experts_per_tok"]
    name = torch.cuda.get_device_properties(dev).name if dev.type == "cuda" else str(dev)
    on_gpu = dev.type == "cuda"
    # HBM read bandwidth, measured: best sum over a 4 GiB tensor.
    big = torch.ones((1 << 30) if on_gpu else (1 << 22), dtype=torch.float32, device=dev)
    big.sum()
    sync()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        big.sum()
        sync()
        best = min(best, time.perf_counter() - t0)
    hbm = big.numel() * 4 / best
    del big
    # bf16 matmul ceiling, measured on a large square GEMM.
    side = 8192 if on_gpu else 256
    a = torch.randn(side, side, dtype=torch.bfloat16, device=dev)
    a @ a
    sync()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ a
    sync()
    flops_peak = 10 * 2 * side**3 / (time.perf_counter() - t0)
    del a

    def timed(fn: Any, x: torch.Tensor, reps: int) -> float:
        with torch.no_grad():
            fn(x)
            sync()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn(x)
            sync()
        return (time.perf_counter() - t0) / reps

    out: dict[str, Any] = {
        "device": name,
        "hbm_read_GBps": hbm / 1e9,
        "bf16_matmul_TFLOPs": flops_peak / 1e12,
    }
    expert_bytes = 3 * h * inter * 2
    for phase, n in (("decode", 1), ("prefill", (512 if quick else 4096) if on_gpu else 64)):
        x = torch.randn(1, n, h, dtype=torch.bfloat16, device=dev)
        reps = 20 if phase == "decode" else 5
        t_ours = timed(ours, x, reps)
        t_ref = timed(ref, x, reps)
        with torch.no_grad():
            diff = (ours(x).float() - ref(x).float()).abs().max().item()
        distinct = min(kimi["n_routed_experts"], n * k)
        bytes_read = (distinct + kimi["n_shared_experts"]) * expert_bytes
        flops = 2 * n * (k + kimi["n_shared_experts"]) * 3 * h * inter
        floor = max(bytes_read / hbm, flops / flops_peak)
        out[phase] = {
            "tokens": n,
            "ours_ms": t_ours * 1e3,
            "ref_ms": t_ref * 1e3,
            "ratio": t_ref / t_ours,
            "ceiling_ms": floor * 1e3,
            "fraction_of_ceiling": floor / t_ours,
            "max_abs_diff_vs_ref": diff,
        }
        print(f"[kimi-layer cuda {phase}] {out[phase]}", flush=True)
    return out


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small token counts, for a smoke test")
    ap.add_argument("--prefill", type=int, default=None)
    ap.add_argument("--decode", type=int, default=None)
    ap.add_argument("--configs", default="tiny,large")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument(
        "--threads",
        default="1",
        help="comma-separated CPU thread counts; each runs every config (and its bound) again",
    )
    ap.add_argument(
        "--offload",
        choices=("none", "quick", "full"),
        default="quick",
        help="also run benchmarks/moe_offload.py (quick: a narrow stack; full: 3 K2-width "
        "layers, ~28 GB written under /tmp) and report it under 'offload'",
    )
    args = ap.parse_args(argv)
    thread_counts = [int(n) for n in args.threads.split(",")]
    prefill = args.prefill or (64 if args.quick else 512)
    decode = args.decode or (16 if args.quick else 128)
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    rounds = 2 if args.quick else 3
    if args.quick:
        global _BW_BYTES
        _BW_BYTES = 1 << 27
    print(
        f"prefill {prefill} tokens (best of {rounds}), decode {decode} tokens,"
        f" threads {thread_counts}"
    )
    # Top-level figures (``report[config]``) are those of the first thread count; every count's
    # are under ``by_threads[str(n)][config]``.
    report: dict[str, Any] = {
        # Whether the decode GEMVs ran through model/cpu_kernels.c (AGENT_RUNTIME_NATIVE_KERNELS=0
        # runs torch's kernels instead: the "before" of that change).
        "native_kernels": cpu_kernels.enabled(),
        "threads": thread_counts[0],
        "thread_counts": thread_counts,
        "prefill_tokens": prefill,
        "decode_tokens": decode,
        "torch": torch.__version__,
        "by_threads": {},
    }
    cfgs = {"tiny": TINY, "large": LARGE}
    for n_threads in thread_counts:
        torch.set_num_threads(n_threads)
        per: dict[str, Any] = {}
        for name in filter(None, args.configs.split(",")):
            per[name] = run_config(name, cfgs[name], dtypes, prefill, decode, rounds)
        _against_best_probe(per)
        report["by_threads"][str(n_threads)] = per
        if n_threads == thread_counts[0]:
            report.update(per)
    torch.set_num_threads(thread_counts[0])
    if torch.cuda.is_available():
        report["kimi_layer_cuda"] = run_kimi_layer_cuda(args.quick)
    else:
        report["kimi_layer_cuda"] = "skipped: no CUDA device"
    if (
        "large" in report
    ):  # low-precision experts (fp8, int8, int4): benchmarks/moe_speed_formats.py
        from moe_speed_formats import FORMATS, run_formats

        formats = run_formats(decode=decode, bandwidth=read_bandwidth())
        report["large"].update({f: formats[f] for f in FORMATS})
        report["large_formats_targets_met"] = formats["targets_met"]
    if args.offload != "none":
        from moe_offload import run as run_offload

        report["offload"] = run_offload(["--quick"] if args.offload == "quick" else [])
        torch.set_num_threads(thread_counts[0])
    large = report.get("large", {}).get("float32")
    tiny = report.get("tiny", {}).get("float32")
    for clock in ("wall", "cpu_time"):
        targets: dict[str, bool] = {}
        lg = large if clock == "wall" or not large else large["cpu_time"]
        tn = tiny if clock == "wall" or not tiny else tiny["cpu_time"]
        if lg:
            targets["large_fp32_decode_2.5x"] = lg["decode_ratio"] >= 2.5
            targets["large_fp32_decode_80pct_bound"] = lg["decode_fraction_of_bound"] >= 0.8
            targets["large_fp32_prefill_1.5x"] = lg["prefill_ratio"] >= 1.5
        if tn:
            targets["tiny_fp32_decode_3x"] = tn["decode_ratio"] >= 3.0
        # decode >= 80% of the same-run bound: fp32 and bf16, every thread count run
        for n_threads, per in report["by_threads"].items():
            for dname, row in per.get("large", {}).items():
                if "cpu_time" not in row:
                    continue  # the low-precision formats (their own targets, below)
                r = row if clock == "wall" else row["cpu_time"]
                key = f"large_{dname}_decode_80pct_bound_{n_threads}t"
                targets[key] = r["decode_fraction_of_best_bound"] >= 0.8
        report["targets_met" if clock == "wall" else "targets_met_cpu_time"] = targets
    print(json.dumps(report, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
