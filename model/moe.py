"""Feed-forward blocks: the dense SwiGLU MLP and the routed mixture of experts.

Routing follows DeepSeek-V3's ``noaux_tc``: sigmoid scores in fp32; a learned per-expert bias
(``e_score_correction_bias``, the auxiliary-loss-free load balancer) is added for *choosing* experts
only; with ``n_group > 1`` each group is scored by the sum of its two best biased scores and only the
``topk_group`` best groups stay eligible; the chosen experts' *unbiased* scores are normalised and
multiplied by ``routed_scaling_factor``.

Expert weights are stacked per layer and seen as ``[in, out]`` (``w13[e]`` = ``[H, 2I]`` with the
gate columns then the up columns, ``w2[e]`` = ``[I, H]``), so a token's work is ``x @ w13[e]``
then ``act @ w2[e]``; one expert's matrices are contiguous in memory, each laid out (``[in, out]``
or ``[out, in]``) as the decode GEMV reads fastest for the dtype and shape
(:func:`.layers.out_major`). How tokens reach
experts depends on the phase:

* one token (decode): loop over its top-k experts, every weight read exactly once, each expert's
  output accumulated in place with its routing weight (``addmm_``, or the native GEMV of
  :mod:`.cpu_kernels` on CPU, which reads the weights at the memory bound);
* many tokens (prefill): sort the (token, expert) pairs by expert, gather the tokens once, and run
  each expert on its contiguous slice (empty experts cost nothing, unlike a grouped matmul that
  visits every expert).
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

import torch
import torch.nn.functional as F

from . import cpu_kernels
from .config import MoEConfig
from .cpu_kernels import xw
from .experts import ExpertBank, ExpertPair
from .layers import empty_weight, projection_weight

__all__ = ["DenseMLP", "MoEBlock", "route", "select_experts"]


def _param(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.nn.Parameter:
    return torch.nn.Parameter(empty_weight(shape, dtype, device), requires_grad=False)


def _proj(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.nn.Parameter:
    """A projection seen as ``[(E,) in, out]``, laid out as :func:`.layers.out_major` prefers."""
    return torch.nn.Parameter(projection_weight(shape, dtype, device), requires_grad=False)


def _swiglu(gu: torch.Tensor, inter: int) -> torch.Tensor:
    act = F.silu(gu[..., :inter])
    return act.mul_(gu[..., inter:])


class DenseMLP(torch.nn.Module):
    """SwiGLU MLP with gate and up projections stacked in one (transposed) weight."""

    def __init__(
        self, hidden: int, inter: int, *, dtype: torch.dtype, device: torch.device
    ) -> None:
        super().__init__()
        self.inter = inter
        self.w13 = _proj((hidden, 2 * inter), dtype, device)
        self.w2 = _proj((inter, hidden), dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == x.shape[-1] and x.device.type == "cpu" and cpu_kernels.enabled():
            # One row (decode): the native GEMV reads each weight at the memory bound.
            row = x.reshape(1, -1)
            y = xw(_swiglu(xw(row, self.w13), self.inter), self.w2)
            return y.view(*x.shape[:-1], y.shape[-1])
        return torch.matmul(_swiglu(torch.matmul(x, self.w13), self.inter), self.w2)


def select_experts(
    scores: torch.Tensor, bias: torch.Tensor, *, top_k: int, n_group: int, topk_group: int
) -> torch.Tensor:
    """Expert ids [N, k] from sigmoid ``scores`` [N, E]: biased scores pick, groups first."""
    choice = scores + bias
    if n_group > 1:
        n, e = choice.shape
        grouped = choice.view(n, n_group, e // n_group)
        group_scores = grouped.topk(2, dim=-1)[0].sum(dim=-1)
        keep = group_scores.topk(topk_group, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep, True)
        choice = grouped.masked_fill(~group_mask[:, :, None], float("-inf")).view(n, e)
    return choice.topk(top_k, dim=-1, sorted=False)[1]


def route(
    x: torch.Tensor,
    gate_w: torch.Tensor,
    bias: torch.Tensor,
    *,
    top_k: int,
    n_group: int,
    topk_group: int,
    norm_topk_prob: bool,
    scaling: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` [N, H], ``gate_w`` [H, E] fp32 -> (weights [N, k] fp32, expert ids [N, k] int64)."""
    scores = torch.mm(x.float(), gate_w).sigmoid_()
    idx = select_experts(scores, bias, top_k=top_k, n_group=n_group, topk_group=topk_group)
    weights = scores.gather(1, idx)
    if norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights * scaling, idx


class MoEBlock(torch.nn.Module):
    """Router + stacked routed experts + shared experts of one layer."""

    def __init__(
        self, config: MoEConfig, *, dtype: torch.dtype, device: torch.device, grouped: bool = False
    ) -> None:
        super().__init__()
        c = config
        h, inter = c.hidden_size, c.moe_intermediate_size
        # grouped=True (CUDA): one grouped GEMM per projection over all experts, no host sync;
        # the weights are then kept [out, in] in memory (the layout the grouped kernels want)
        # and exposed through the same [in, out] views.
        self.grouped = grouped
        self.n_experts = c.n_routed_experts
        self.inter = inter
        self.top_k = c.num_experts_per_tok
        self.n_group = c.n_group
        self.topk_group = c.topk_group
        self.norm_topk_prob = c.norm_topk_prob
        self.scaling = float(c.routed_scaling_factor)
        if grouped:
            self.w13 = _param((self.n_experts, 2 * inter, h), dtype, device)
            self.w2 = _param((self.n_experts, h, inter), dtype, device)
            self.w13.data = self.w13.data.transpose(1, 2)
            self.w2.data = self.w2.data.transpose(1, 2)
        else:
            self.w13 = _proj((self.n_experts, h, 2 * inter), dtype, device)
            self.w2 = _proj((self.n_experts, inter, h), dtype, device)
        self.gate_w = _param((h, self.n_experts), torch.float32, device)
        self.gate_bias = _param((self.n_experts,), torch.float32, device)
        self.shared: DenseMLP | None = None
        if c.n_shared_experts > 0:
            self.shared = DenseMLP(h, inter * c.n_shared_experts, dtype=dtype, device=device)
        # Routed experts from an ExpertBank (any storage format, resident or offloaded) instead
        # of the stacked w13/w2, which then hold no memory; see set_bank.
        self.bank: ExpertBank | None = None
        self.shared_pair: ExpertPair | None = None
        # Per-expert selection counts, allocated only while router statistics are on.
        self.load_counts: torch.Tensor | None = None
        # Tokens whose routing should not be counted (left padding), set per forward.
        self.count_mask: torch.Tensor | None = None
        self._views: (
            tuple[
                tuple[int, int, int],
                list[torch.Tensor],
                list[torch.Tensor],
                torch.Tensor,
                torch.Tensor,
                tuple[torch.Tensor, torch.Tensor] | None,
            ]
            | None
        ) = None

    def _expert_views(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per expert, views of its weights ([H, 2I] and [I, H]), built once: indexing the
        stacked tensor on every call is one more dispatcher op per matmul. Keyed by storage
        address (the views keep the old storage alive, so the key cannot be reused)."""
        key = (self.w13.data_ptr(), self.w2.data_ptr(), self.gate_w.data_ptr())
        if self._views is None or self._views[0] != key:
            self._build_views(key)
        assert self._views is not None
        return self._views[1], self._views[2]

    @torch.inference_mode(False)
    def _build_views(self, key: tuple[int, int, int]) -> None:
        # Ordinary tensors even when first built inside the model's inference mode: the cached
        # views and buffers are reused by calls outside it (tests, direct block calls).
        w13 = [self.w13[e] for e in range(self.n_experts)]
        w2 = [self.w2[e] for e in range(self.n_experts)]
        if self.shared is not None:
            shared = (self.shared.w13.data, self.shared.w2.data)
        else:
            shared = None
        self._views = (key, w13, w2, self.gate_w.data, self.gate_bias.data, shared)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if self.bank is not None:
            return self._bank_forward(flat).view(shape)
        if self.grouped:
            key = self._grouped_key(flat)
            if _GROUPED_OK.get(key, True):
                # Routed (and counted) once, before the kernel runs: a failing grouped GEMM
                # falls back to the sorted loop with the same routing, so nothing counts twice.
                weights, idx = self._route(flat)
                try:
                    return self._grouped(flat, weights, idx).view(shape)
                except torch.OutOfMemoryError:
                    raise  # transient: not a reason to give up on the kernel
                except (RuntimeError, NotImplementedError) as exc:  # no kernel for this case
                    _GROUPED_OK[key] = False
                    log.warning("grouped GEMM unavailable for %s (%s); using the loop", key, exc)
                return self._sorted(flat, weights, idx).view(shape)
        if flat.shape[0] == 1 and self.load_counts is None:
            return self._one_token(flat).view(shape)
        weights, idx = self._route(flat)
        return self._sorted(flat, weights, idx).view(shape)

    def _route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Routing weights and expert indices of every token of ``x``, added to the load counts
        (only the rows ``count_mask`` keeps) when statistics are on: one place, so every path
        that routes on the device counts the same way."""
        weights, idx = route(
            x,
            self.gate_w,
            self.gate_bias,
            top_k=self.top_k,
            n_group=self.n_group,
            topk_group=self.topk_group,
            norm_topk_prob=self.norm_topk_prob,
            scaling=self.scaling,
        )
        if self.load_counts is not None:
            counted = idx if self.count_mask is None else idx[self.count_mask.reshape(-1)]
            self.load_counts += torch.bincount(counted.reshape(-1), minlength=self.n_experts).to(
                self.load_counts.device
            )
        return weights, idx

    def _one_token(self, x: torch.Tensor) -> torch.Tensor:
        """Decode: route one token and run its experts, accumulating ``w_j * expert_j(x)`` into
        the shared experts' output in place. Routing weights are normalised on the host (the
        ids have to come to the host anyway to pick the weight matrices)."""
        w13, w2 = self._expert_views()
        assert self._views is not None
        gate_w, bias, shared = self._views[3:]
        scores = torch.mm(x if x.dtype == torch.float32 else x.float(), gate_w).sigmoid_()
        if self.n_group > 1:
            idx_t = select_experts(
                scores, bias, top_k=self.top_k, n_group=self.n_group, topk_group=self.topk_group
            )
        else:
            idx_t = torch.topk(scores + bias, self.top_k, dim=-1, sorted=False)[1]
        ids = idx_t.tolist()[0]
        picked = torch.gather(scores, 1, idx_t).tolist()[0]
        if self.norm_topk_prob:
            scale = self.scaling / (sum(picked) + 1e-20)
            coefs = [p * scale for p in picked]
        else:
            coefs = [p * self.scaling for p in picked]
        k = len(ids)
        fuse_shared = shared is not None and shared[1].shape[0] == self.inter
        gu_rows, gu, gate, up, act, act_rows = self._decode_buffers(k + fuse_shared, x)
        # Native GEMVs (memory-bound reads; the same products) where available, else torch's.
        native = x.device.type == "cpu" and cpu_kernels.enabled()
        # Every gate/up product lands in one row of a [k (+1), 2I] buffer, so SiLU and the
        # product with "up" run once for all experts (2 ops instead of 4 per expert).
        for j, e in enumerate(ids):
            if native:
                xw(x, w13[e], gu_rows[j])
            else:
                torch.mm(x, w13[e], out=gu_rows[j])
        if fuse_shared:
            assert shared is not None
            if native:
                xw(x, shared[0], gu_rows[k])
            else:
                torch.mm(x, shared[0], out=gu_rows[k])
        torch.mul(F.silu(gate, inplace=True), up, out=act)
        if fuse_shared:
            assert shared is not None
            out = xw(act_rows[k], shared[1]) if native else torch.mm(act_rows[k], shared[1])
        elif shared is not None:
            sgu = torch.mm(x, shared[0])
            half = sgu.shape[1] // 2
            out = torch.mm(
                F.silu(sgu.narrow(1, 0, half)).mul_(sgu.narrow(1, half, half)), shared[1]
            )
        else:
            out = torch.zeros_like(x)
        for j, (e, coef) in enumerate(zip(ids, coefs, strict=True)):
            if native:
                xw(act_rows[j], w2[e], out, alpha=coef, accumulate=True)
            else:
                out.addmm_(act_rows[j], w2[e], alpha=coef)
        return out

    def _decode_buffers(self, rows: int, x: torch.Tensor) -> tuple[Any, ...]:
        """Per thread: the [rows, 2I] gate/up buffer, its row views, its gate and up halves, the
        [rows, I] activation buffer and its row views (views built once, not per step)."""
        key = (rows, x.dtype, x.device)
        per_block: weakref.WeakKeyDictionary[MoEBlock, tuple[Any, ...]] = (
            _local.__dict__.setdefault("decode", weakref.WeakKeyDictionary())
        )
        bufs = per_block.get(self)
        if bufs is None or bufs[0] != key:
            bufs = self._new_decode_buffers(key, rows, x)
            per_block[self] = bufs
        return bufs[1:]

    @torch.inference_mode(False)
    def _new_decode_buffers(
        self, key: tuple[Any, ...], rows: int, x: torch.Tensor
    ) -> tuple[Any, ...]:
        inter = self.inter
        gu = torch.empty(rows, 2 * inter, dtype=x.dtype, device=x.device)
        act = torch.empty(rows, inter, dtype=x.dtype, device=x.device)
        return (
            key,
            [gu[j : j + 1] for j in range(rows)],
            gu,
            gu[:, :inter],
            gu[:, inter:],
            act,
            [act[j : j + 1] for j in range(rows)],
        )

    def _grouped_key(self, x: torch.Tensor) -> tuple[str, torch.dtype, tuple[int, ...], int]:
        """What decides whether the grouped kernel exists: the device (with its index, GPUs in
        one host may differ), the dtype and the expert shapes. One failure disables the grouped
        path for this key only, not for every later model on the same kind of device."""
        return (str(x.device), x.dtype, tuple(self.w13.shape), self.top_k)

    def _grouped(self, x: torch.Tensor, weights: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """All experts in two grouped GEMMs (tokens sorted by expert, ``offs`` = group ends);
        nothing is copied to the host, so decode steps need no synchronisation."""
        flat_idx = idx.reshape(-1)
        order = torch.argsort(flat_idx, stable=True)
        offs = torch.cumsum(torch.bincount(flat_idx, minlength=self.n_experts), 0).to(torch.int32)
        tokens = order // self.top_k
        xs = x.index_select(0, tokens)
        gu = F.grouped_mm(xs, self.w13, offs=offs)
        act = F.silu(gu[:, : self.inter]).mul_(gu[:, self.inter :])
        ys = F.grouped_mm(act, self.w2, offs=offs)
        ys.mul_(weights.reshape(-1)[order].to(ys.dtype)[:, None])
        out = self.shared(x) if self.shared is not None else torch.zeros_like(x)
        return out.index_add_(0, tokens, ys)

    def _sorted(self, x: torch.Tensor, weights: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        flat_idx = idx.reshape(-1)
        order = torch.argsort(flat_idx, stable=True)
        counts = torch.bincount(flat_idx, minlength=self.n_experts).tolist()
        tokens = order // self.top_k
        rows, h = tokens.shape[0], x.shape[1]
        # Two reused buffers, no allocation inside the expert loop: the gathered tokens (each
        # slice overwritten by its expert's output once consumed) and one expert's gate/up.
        space = _workspace(rows * h + max(counts) * 2 * self.inter, x.dtype, x.device)
        xs = torch.index_select(x, 0, tokens, out=space[: rows * h].view(rows, h))
        gu_all = space[rows * h :]
        w13, w2 = self._expert_views()
        # Routing weights scale the (small) activations before the down projection rather than
        # its [rows, H] output: the same product, one pass over 4x fewer values.
        coef = weights.reshape(-1)[order].to(xs.dtype)[:, None]
        inter = self.inter
        start = 0
        for e, cnt in enumerate(counts):
            if cnt == 0:
                continue
            end = start + cnt
            gu = torch.mm(xs[start:end], w13[e], out=gu_all[: cnt * 2 * inter].view(cnt, -1))
            act = F.silu(gu[:, :inter], inplace=True).mul_(gu[:, inter:]).mul_(coef[start:end])
            torch.mm(act, w2[e], out=xs[start:end])
            start = end
        out = self.shared(x) if self.shared is not None else torch.zeros_like(x)
        return out.index_add_(0, tokens, xs)

    # ------------------------------------------------------------------ expert bank path
    def set_bank(self, bank: ExpertBank | None, *, shared: ExpertPair | None = None) -> None:
        """Run the routed experts from ``bank`` (``None``: back to the stacked dense weights,
        which must then be loaded again). The stacked ``w13`` / ``w2`` become shape-only (meta)
        tensors: the bank holds the weights. ``shared`` replaces the shared experts' dense
        weights the same way (gate_up, down in any format)."""
        if bank is not None and bank.n_experts != self.n_experts:
            raise ValueError(f"the bank has {bank.n_experts} experts, the layer {self.n_experts}")
        self.bank = bank
        self._views = None
        if bank is not None:
            _to_meta(self, "w13", "w2")
        if shared is not None:
            if self.shared is None:
                raise ValueError("this layer has no shared experts to replace")
            _to_meta(self.shared, "w13", "w2")
        self.shared_pair = shared

    def _bank_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Routed as on the dense path; the bank is asked once for the distinct experts used,
        then each runs on its tokens (one token: its top-k; many: sorted by expert)."""
        assert self.bank is not None
        weights, idx = self._route(x)
        out = self._bank_shared(x)
        inter = self.inter
        if x.shape[0] == 1:
            ids = idx[0].tolist()
            coefs = weights[0].tolist()
            for (gate_up, down), coef in zip(self.bank.fetch(ids, x), coefs, strict=True):
                gu = gate_up.mm(x)
                act = F.silu(gu[:, :inter]).mul_(gu[:, inter:])
                out.add_(down.mm(act), alpha=coef)
            return out
        flat_idx = idx.reshape(-1)
        order = torch.argsort(flat_idx, stable=True)
        counts = torch.bincount(flat_idx, minlength=self.n_experts).tolist()
        used = [e for e, cnt in enumerate(counts) if cnt]
        tokens = order // self.top_k
        xs = x.index_select(0, tokens)
        coef = weights.reshape(-1)[order].to(x.dtype)[:, None]
        ys = torch.empty_like(xs)
        start = 0
        for e, (gate_up, down) in zip(used, self.bank.fetch(used, x), strict=True):
            end = start + counts[e]
            gu = gate_up.mm(xs[start:end])
            act = F.silu(gu[:, :inter]).mul_(gu[:, inter:]).mul_(coef[start:end])
            ys[start:end] = down.mm(act)
            start = end
        return out.index_add_(0, tokens, ys)

    def _bank_shared(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared_pair is not None:
            gate_up, down = self.shared_pair
            gu = gate_up.mm(x)
            half = gu.shape[1] // 2
            return down.mm(F.silu(gu[:, :half]).mul_(gu[:, half:]))
        if self.shared is not None:
            return self.shared.forward(x)
        return torch.zeros_like(x)


def _to_meta(module: torch.nn.Module, *names: str) -> None:
    """Replace parameters by shape- and stride-only (meta) ones: the layout views still work, the
    memory is freed."""
    for name in names:
        p = getattr(module, name)
        meta = torch.empty_strided(tuple(p.shape), tuple(p.stride()), dtype=p.dtype, device="meta")
        setattr(module, name, torch.nn.Parameter(meta, requires_grad=False))


_local = threading.local()
# (device, dtype, expert shape, top-k) combinations where the grouped GEMM kernel failed.
_GROUPED_OK: dict[tuple[str, torch.dtype, tuple[int, ...], int], bool] = {}
log = logging.getLogger(__name__)


def _workspace(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A flat scratch tensor of at least ``numel`` elements, kept per thread, dtype and device:
    prefill temporaries are tens of MB, and fresh allocations that size cost page faults."""
    spaces: dict[tuple[torch.dtype, torch.device], torch.Tensor] = _local.__dict__.setdefault(
        "spaces", {}
    )
    key = (dtype, device)
    buf = spaces.get(key)
    if buf is None or buf.numel() < numel:
        with torch.inference_mode(False):  # reused outside the model's inference mode too
            buf = torch.empty(max(numel, 1 << 16), dtype=dtype, device=device)
        spaces[key] = buf
    return buf[:numel]
