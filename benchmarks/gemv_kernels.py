"""Read bandwidth of the native one-row GEMV kernels (model/cpu_kernels.c) on decode-sized matrices.

Method: for each kernel and shape (the large config's experts [512, 1024] and [1024, 256],
attention [800, 1024], [768, 512], [4096, 1024], the lm_head [32000, 1024]; FP8 and INT4 on the
expert shapes; the per-head batched kernel) a bank of distinct matrices far larger than the
last-level cache (``--bank-mb``, bf16/fp32 in one huge-page-advised tensor) is built, and each
round multiplies one activation row by ``--calls`` matrices of it in a random order, back to back
(what decode does: every matrix is cold). GB/s = bytes of weights (and scales) read / wall time of
the round, median of ``--rounds`` rounds, for

* native: the library through its wrappers (``xw``, ``bxw``, ``Fp8BlockLinear.mm`` and
  ``Int4Linear.mm`` with the kernels on), Python call overhead included;
* torch: the same product the stock way: ``F.linear`` in the weight's dtype, ``torch.bmm``, and
  for FP8/INT4 the torch path of quant.py (``native_kernels(False)``);

at 1 and 2 threads (``torch.set_num_threads``), against the read probe of the same run
(``read_bandwidth`` of benchmarks/moe_speed.py: one thread, 1 GiB). Prints one line per case and,
last, one JSON object.

    .venv/bin/python benchmarks/gemv_kernels.py [--bank-mb 256] [--threads 1 2]
        [--kinds bf16 fp32 quant batched]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from moe_speed import read_bandwidth

from agent_runtime.model import cpu_kernels
from agent_runtime.model.cpu_kernels import bxw, native_kernels, xw
from agent_runtime.model.layers import advise_huge_pages
from agent_runtime.model.quant import Fp8BlockLinear, Int4Linear

DENSE = [(512, 1024), (1024, 256), (800, 1024), (768, 512), (4096, 1024), (32000, 1024)]
QUANT = [(512, 1024), (1024, 256)]
BATCHED = [(16, 128, 512)]  # heads, out, in: per-head attention products


def _bank(count: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    bank = torch.empty(count, *shape, dtype=dtype)
    advise_huge_pages(bank)
    bank.normal_()
    return bank


def _rate(calls: list[Callable[[], Any]], nbytes: int, rounds: int) -> float:
    """Median GB/s over rounds of all `calls` (one per matrix) in a fresh random order."""
    rates = []
    for _ in range(rounds):
        order = calls[:]
        random.shuffle(order)
        t0 = time.perf_counter()
        for call in order:
            call()
        rates.append(len(order) * nbytes / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


def _count(nbytes: int, bank_mb: int, calls: int) -> int:
    return max(4, min(calls, bank_mb * 2**20 // nbytes))


def _dense_cases(dtype: torch.dtype, args: argparse.Namespace) -> list[tuple[str, Any, Any, int]]:
    out = []
    for n_out, n_in in DENSE:
        nbytes = n_out * n_in * torch.finfo(dtype).bits // 8
        bank = _bank(_count(nbytes, args.bank_mb, args.calls), (n_out, n_in), dtype)
        x = torch.randn(1, n_in, dtype=dtype)
        y = torch.empty(1, n_out, dtype=dtype)
        ws = list(bank)
        native = [partial(xw, x, w.t(), y) for w in ws]
        stock = [partial(F.linear, x, w) for w in ws]
        name = f"{str(dtype).removeprefix('torch.')} [{n_out},{n_in}]"
        out.append((name, native, stock, nbytes))
    return out


def _quant_cases(args: argparse.Namespace) -> list[tuple[str, Any, Any, int]]:
    out = []
    for n_out, n_in in QUANT:
        x = torch.randn(1, n_in, dtype=torch.bfloat16)
        fp8_bytes = n_out * n_in
        n = _count(fp8_bytes, args.bank_mb, args.calls)
        codes = torch.randint(0, 0x7E, (n, n_out, n_in), dtype=torch.uint8)  # no NaN codes
        codes |= torch.randint(0, 2, codes.shape, dtype=torch.uint8) << 7
        grid = (-(-n_out // 128), -(-n_in // 128))
        fp8 = [
            Fp8BlockLinear(c.view(torch.float8_e4m3fn), torch.rand(grid) * 1e-2 + 1e-3)
            for c in codes
        ]
        del codes
        out.append(
            (
                f"fp8 [{n_out},{n_in}]",
                [partial(m.mm, x) for m in fp8],
                [partial(m.mm, x) for m in fp8],
                fp8[0].nbytes,
            )
        )
        n = _count(n_out * n_in // 2, args.bank_mb, args.calls)
        qs = [torch.randint(-8, 8, (n_out, n_in), dtype=torch.int8) for _ in range(n)]
        # bf16-exact scales, so torch's own INT4 kernel applies to the same weights
        ss = [(torch.rand(n_out, n_in // 32) * 1e-2 + 1e-3).bfloat16().float() for _ in range(n)]
        int4 = [Int4Linear(q, s) for q, s in zip(qs, ss, strict=True)]
        with native_kernels(False):
            int4_torch = [Int4Linear(q, s) for q, s in zip(qs, ss, strict=True)]
        del qs, ss
        out.append(
            (
                f"int4 [{n_out},{n_in}]",
                [partial(m.mm, x) for m in int4],
                [partial(m.mm, x) for m in int4_torch],
                int4[0].nbytes,
            )
        )
    return out


def _batched_cases(args: argparse.Namespace) -> list[tuple[str, Any, Any, int]]:
    out = []
    for heads, n_out, n_in in BATCHED:
        for dtype in (torch.bfloat16, torch.float32):
            nbytes = heads * n_out * n_in * torch.finfo(dtype).bits // 8
            bank = _bank(_count(nbytes, args.bank_mb, args.calls), (heads, n_out, n_in), dtype)
            x = torch.randn(heads, n_in)
            ws = [w.transpose(1, 2) for w in bank]
            native = [partial(bxw, x, w) for w in ws]
            stock = [partial(torch.bmm, x.to(dtype).unsqueeze(1), w) for w in ws]
            name = f"batched {str(dtype).removeprefix('torch.')} {heads}x[{n_out},{n_in}]"
            out.append((name, native, stock, nbytes))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bank-mb", type=int, default=256, help="bytes of distinct matrices")
    parser.add_argument("--calls", type=int, default=200, help="matrices per round (at most)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=["bf16", "fp32", "quant", "batched"],
        default=["bf16", "fp32", "quant", "batched"],
        help="case groups to run (quant: FP8 and INT4)",
    )
    args = parser.parse_args()
    if not cpu_kernels.available():
        raise SystemExit("native kernels unavailable: nothing to measure")
    torch.manual_seed(0)
    random.seed(0)
    results: dict[str, Any] = {"threads": {}}
    probe = read_bandwidth() / 1e9
    results["probe_gbs"] = round(probe, 1)
    print(f"read probe (1 thread, 1 GiB): {probe:.1f} GB/s")
    groups: dict[str, Callable[[], list[tuple[str, Any, Any, int]]]] = {
        "bf16": lambda: _dense_cases(torch.bfloat16, args),
        "fp32": lambda: _dense_cases(torch.float32, args),
        "quant": lambda: _quant_cases(args),
        "batched": lambda: _batched_cases(args),
    }
    builders = [groups[kind] for kind in args.kinds]
    for threads in args.threads:
        results["threads"][threads] = {}
    for build in builders:
        cases = build()  # one group of banks alive at a time
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name, native, stock, nbytes in cases:
                with native_kernels(True):
                    ours = _rate(native, nbytes, args.rounds)
                with native_kernels(False):
                    theirs = _rate(stock, nbytes, args.rounds)
                print(
                    f"{threads}T {name:32s} native {ours:5.1f} GB/s ({ours / probe:4.0%} of probe)"
                    f"  torch {theirs:5.1f} GB/s  native/torch {ours / theirs:4.2f}"
                )
                results["threads"][threads][name] = {
                    "native_gbs": round(ours, 1),
                    "torch_gbs": round(theirs, 1),
                    "native_of_probe": round(ours / probe, 3),
                }
        del cases
    results["probe_gbs_end"] = round(read_bandwidth() / 1e9, 1)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
