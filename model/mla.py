"""Multi-head latent attention (MLA) over the compressed cache, in two mathematically equal forms.

Keys and values of every head are linear in the cached latent ``c`` (``k_nope = Wk c``,
``v = Wv c`` with ``Wk, Wv`` slices of ``kv_b_proj``). So a query can either

* expand: rebuild per-head keys/values for the whole context through ``kv_b_proj`` and run
  ordinary attention (cost ~ context x kv_lora x heads x (nope + v)); or
* absorb: move ``Wk`` onto the query (``q_nope . Wk c = (Wk^T q_nope) . c``) and ``Wv`` onto the
  output, attending directly over the latent rows (cost ~ queries x context x heads x kv_lora).

One decode query makes absorption far cheaper (no per-step re-expansion of the context); a long
prefill, where queries ~ context, is cheaper expanded. :meth:`MLAttention.forward` estimates both
and picks the cheaper one unless a path is forced.

Projection weights are seen as ``[in, out]``, so every projection is a plain ``x @ W``; in memory
each is laid out the way the decode GEMV reads fastest for its dtype and shape on this device
(:func:`.layers.out_major`: bf16 on CPU is always ``[out, in]``). ``kv_b_proj`` keeps the
checkpoint layout, which is the one the absorbed form reads per head; in reduced precision on
CPU the decode step reads fp32 copies of its two halves in the layouts the batched kernels read
fastest (CPU batched matmuls in bf16 are several times slower than fp32 on these small per-head
products; the copies are ~1% of a layer's weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from . import cpu_kernels
from .config import MoEConfig
from .cpu_kernels import bxw, xw
from .layers import Rotation, apply_rotary, empty_weight, projection_weight, rms_norm

__all__ = ["AttentionPath", "MLAttention", "StepInfo"]

AttentionPath = Literal["auto", "absorbed", "expanded"]

# Queries per block of the chunked expanded attention (scores of a block stay in L2).
_CHUNK = 64


@dataclass
class StepInfo:
    """What every layer of one forward shares: where the new tokens go and what they may see."""

    start: int
    length: int
    rot: Rotation  # [B or 1, T, rope/2]
    # [B, T, ctx] bool of allowed (query, key) pairs; None means plain causal, nothing padded.
    allowed: torch.Tensor | None

    @property
    def end(self) -> int:
        return self.start + self.length


def _param(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.nn.Parameter:
    return torch.nn.Parameter(empty_weight(shape, dtype, device), requires_grad=False)


def _proj(shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.nn.Parameter:
    return torch.nn.Parameter(projection_weight(shape, dtype, device), requires_grad=False)


class MLAttention(torch.nn.Module):
    """One layer's attention. The two projections that read the hidden state (``q_a_proj`` or
    ``q_proj``, and ``kv_a_proj_with_mqa``) are stacked into ``w_a`` so one matmul serves both."""

    def __init__(self, config: MoEConfig, *, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        c = config
        self.heads = c.num_attention_heads
        self.q_lora = c.q_lora_rank
        self.kv_lora = c.kv_lora_rank
        self.nope = c.qk_nope_head_dim
        self.rope = c.qk_rope_head_dim
        self.v_dim = c.v_head_dim
        self.qk_dim = c.qk_head_dim
        self.eps = c.rms_norm_eps
        self.interleave = c.rope_interleave
        self.scale = c.softmax_scale()
        self.q_out = self.heads * self.qk_dim
        self.q_in = self.q_lora if self.q_lora is not None else self.q_out
        h = c.hidden_size
        self.w_a = _proj((h, self.q_in + self.kv_lora + self.rope), dtype, device)
        if self.q_lora is not None:
            self.q_norm: torch.nn.Parameter | None = _param((self.q_lora,), dtype, device)
            self.w_qb: torch.nn.Parameter | None = _proj((self.q_lora, self.q_out), dtype, device)
        else:
            self.q_norm = None
            self.w_qb = None
        self.kv_norm = _param((self.kv_lora,), dtype, device)
        self.w_kvb = _param((self.heads * (self.nope + self.v_dim), self.kv_lora), dtype, device)
        self.w_o = _proj((self.heads * self.v_dim, h), dtype, device)
        self.path: AttentionPath = "auto"
        self._weights: tuple[torch.Tensor, ...] | None = None
        self._cache_views: (
            tuple[tuple[int, torch.Size], torch.Tensor, torch.Tensor, torch.Tensor] | None
        ) = None

    # ------------------------------------------------------------------ helpers
    def _queries(self, a: torch.Tensor) -> torch.Tensor:
        if self.q_lora is None:
            return a[..., : self.q_out]
        assert self.q_norm is not None and self.w_qb is not None
        return torch.matmul(rms_norm(a[..., : self.q_lora], self.q_norm, self.eps), self.w_qb)

    def _choose(self, t: int, ctx: int, causal_prefill: bool) -> str:
        if self.path != "auto":
            return self.path
        hd = self.heads
        absorbed = t * ctx * hd * (2 * self.kv_lora + self.rope) + t * hd * self.kv_lora * (
            self.nope + self.v_dim
        )
        pairs = t * ctx * (0.5 if causal_prefill else 1.0)
        expanded = ctx * self.kv_lora * hd * (self.nope + self.v_dim) + pairs * hd * (
            self.qk_dim + self.v_dim
        )
        return "absorbed" if absorbed <= expanded else "expanded"

    # ------------------------------------------------------------------ forward
    def forward(
        self, x: torch.Tensor, step: StepInfo, cache: torch.Tensor, keep: int = 0
    ) -> torch.Tensor:
        """``x`` [B, T, H] -> [B, T, H]; writes the new latent rows into ``cache`` [B, cap, W].

        ``keep`` > 0 (the last layer of a prefill that only needs the last positions' logits):
        every token still writes its latent row, but only the last ``keep`` tokens are queried
        and returned ([B, keep, H]); the other queries' outputs would be discarded anyway."""
        b, t, h = x.shape
        if b == 1 and t == 1 and step.allowed is None and self.path != "expanded":
            return self._decode_one(x.view(1, h), step, cache).view(1, 1, h)
        off = self.q_in
        if 0 < keep < t:
            kv_a = torch.matmul(x, self.w_a[:, off:])
            a_q = torch.matmul(x[:, t - keep :], self.w_a[:, :off])
            rot = step.rot
            q_rot = Rotation(rot.cis[:, t - keep :], rot.cos[:, t - keep :], rot.sin[:, t - keep :])
            allowed = None if step.allowed is None else step.allowed[:, t - keep :]
            q_step = StepInfo(step.end - keep, keep, q_rot, allowed)
            q_len = keep
        else:
            a = torch.matmul(x, self.w_a)
            kv_a, a_q, q_step, q_len = a[..., off:], a, step, t
        q = self._queries(a_q).view(b, q_len, self.heads, self.qk_dim)
        new_rows = cache[:, step.start : step.end]
        new_rows[..., : self.kv_lora] = rms_norm(kv_a[..., : self.kv_lora], self.kv_norm, self.eps)
        new_rows[..., self.kv_lora :] = apply_rotary(
            kv_a[..., self.kv_lora :], step.rot, self.interleave
        )
        step = q_step
        t = q_len
        q_pe = apply_rotary(q[..., self.nope :], step.rot.per_head(), self.interleave)
        q_nope = q[..., : self.nope]
        latent = cache[:, : step.end]
        causal_prefill = step.allowed is None and step.start == 0 and t > 1
        if self._choose(t, step.end, causal_prefill) == "absorbed":
            out = self._absorbed(q_nope, q_pe, latent, step)
        elif step.allowed is None and t > _CHUNK:  # one block would skip nothing: SDPA then
            out = self._expanded_chunked(q_nope, q_pe, latent, step)
        else:
            out = self._expanded(q_nope, q_pe, latent, step, causal_prefill)
        return torch.matmul(out, self.w_o)

    def reset_views(self) -> None:
        """Forget the cached weight/cache views (after parameters were replaced)."""
        self._weights = None
        self._cache_views = None

    def _weight_views(self) -> tuple[torch.Tensor, ...]:
        # Plain tensors (no nn.Module attribute lookup) and the per-head slices of kv_b_proj.
        if self._weights is None:
            self._build_weight_views()
        assert self._weights is not None
        return self._weights

    @torch.inference_mode(False)
    def _build_weight_views(self) -> None:
        # Ordinary tensors even when first built inside the model's inference mode.
        w = self.w_kvb.data.view(self.heads, self.nope + self.v_dim, self.kv_lora)
        w_k, w_vt = w[:, : self.nope], w[:, self.nope :].transpose(1, 2)
        if w.device.type == "cpu":
            # fp32 copies (also for bf16 models: CPU batched matmuls in bf16 are several times
            # slower) in the layouts MKL's batched GEMV reads fastest, measured: the key half
            # [hd, kv_lora, nope] seen transposed (2.5x faster than the checkpoint's [hd, nope,
            # kv_lora]) and the value half [hd, kv_lora, v] (2x faster than a transposed view).
            w_k = w_k.float().transpose(1, 2).contiguous().transpose(1, 2)
            w_vt = w_vt.float().contiguous()
        else:
            # GPU batched matmuls copy strided batches on every call; one contiguous copy
            # of kv_b_proj's two halves is cheaper than that.
            w_k, w_vt = w_k.contiguous(), w_vt.contiguous()
        # For the native per-head kernels (cpu_kernels.bxw), each head's matrix [out, in]
        # row-major in the model dtype: the value half is that already (a view), the key half
        # one copy (fp32 models: the copy above is it).
        nk = w[:, : self.nope]
        native_k = w_k if w_k.dtype == w.dtype else nk.transpose(1, 2).contiguous().transpose(1, 2)
        q_norm = self.q_norm if self.q_norm is not None else self.kv_norm
        w_qb = self.w_qb if self.w_qb is not None else self.w_a
        self._weights = (
            self.w_a.data,
            q_norm.data,
            w_qb.data,
            self.kv_norm.data,
            w_k,
            w_vt,
            self.w_o.data,
            native_k,
            w[:, self.nope :].transpose(1, 2),
        )

    def _latent_views(self, cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Keyed by address: the views keep the old buffer alive, so a new buffer cannot reuse it.
        key = (cache.data_ptr(), cache.shape)
        if self._cache_views is None or self._cache_views[0] != key:
            with torch.inference_mode(False):
                self._cache_views = self._build_latent_views(key, cache)
        return self._cache_views[1:]

    def _build_latent_views(
        self, key: tuple[int, torch.Size], cache: torch.Tensor
    ) -> tuple[tuple[int, torch.Size], torch.Tensor, torch.Tensor, torch.Tensor]:
        c = cache[0, :, : self.kv_lora]
        k = cache[0, :, self.kv_lora :]
        return (key, c, k, cache[0].t())

    def _decode_one(self, x: torch.Tensor, step: StepInfo, cache: torch.Tensor) -> torch.Tensor:
        """Absorbed attention for one token of one sequence ([1, H] -> [1, H]): only 2-D
        matmuls over the latent rows, no concatenation, and in fp32 no copy of the cache (in
        reduced precision on CPU the attention runs in fp32 on one copy of the rows attended
        over). Slices are taken with ``narrow`` on precomputed views: indexing syntax costs
        more per call."""
        hd, kvl, off, nope = self.heads, self.kv_lora, self.q_in, self.nope
        w_a, q_norm, w_qb, kv_norm, w_k, w_vt, w_o, native_k, native_vt = self._weight_views()
        c_all, k_all, lat_t = self._latent_views(cache)
        # The projections are one-row GEMVs: native kernels where available (same products).
        native = x.device.type == "cpu" and cpu_kernels.enabled()
        mm = xw if native else torch.mm
        a = mm(x, w_a)
        pos = step.start
        ctx = pos + 1
        rms_norm(a.narrow(1, off, kvl), kv_norm, self.eps, out=c_all.narrow(0, pos, 1))
        rmat = step.rot.matrix(self.interleave)
        torch.mm(a.narrow(1, off + kvl, self.rope), rmat, out=k_all.narrow(0, pos, 1))
        if self.q_lora is None:
            q = a.narrow(1, 0, self.q_out).view(hd, self.qk_dim)
        else:
            q = mm(rms_norm(a.narrow(1, 0, off), q_norm, self.eps), w_qb).view(hd, self.qk_dim)
        wide = w_k.dtype  # fp32 on CPU for reduced-precision models (see _build_weight_views)
        if wide != x.dtype:
            # In bf16, products whose weight side is the cache ([8, ctx] @ [ctx, kv_lora]) run
            # a generic kernel on CPUs without bf16 instructions (~10x slower than fp32, 1 ms
            # per layer at 512 tokens); one fp32 copy of the rows attended over costs ~5% of it.
            rows = lat_t.narrow(1, 0, ctx).t().to(wide)
            keys_t, values = rows.t(), rows.narrow(1, 0, kvl)
            q, rmat = q.to(wide), rmat.to(wide)
        else:
            keys_t, values = lat_t.narrow(1, 0, ctx), c_all.narrow(0, 0, ctx)
        # The absorbed query [hd, kv_lora + rope] laid out like a cache row, so one product
        # with the (transposed) cache reads each latent row once, as one contiguous stream.
        q_full = torch.empty(hd, kvl + self.rope, dtype=wide, device=x.device)
        torch.mm(q.narrow(1, nope, self.rope), rmat, out=q_full.narrow(1, kvl, self.rope))
        if native:
            q_lat = bxw(q.narrow(1, 0, nope), native_k)
        else:
            q_lat = torch.bmm(q.narrow(1, 0, nope).unsqueeze(1), w_k)
        q_full.narrow(1, 0, kvl).copy_(q_lat.view(hd, kvl))
        scores = torch.mm(q_full, keys_t).mul_(self.scale)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
        if probs.dtype != wide:
            probs = probs.to(wide)
        o_lat = torch.mm(probs, values)  # [hd, kv_lora]
        if native:
            o = bxw(o_lat, native_vt)  # [hd, 1, v]
        else:
            o = torch.bmm(o_lat.unsqueeze(1), w_vt)  # [hd, 1, v]
        if o.dtype != x.dtype:
            o = o.to(x.dtype)
        return mm(o.view(1, hd * self.v_dim), w_o)

    def _absorbed(
        self,
        q_nope: torch.Tensor,
        q_pe: torch.Tensor,
        latent: torch.Tensor,
        step: StepInfo,
        w_kvb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if q_nope.dtype != torch.float32 and q_nope.device.type == "cpu":
            # As in _decode_one: the batched products with the cache (and kv_b_proj) as the
            # weight side are ~10x slower in bf16 than in fp32 on CPU, so run them in fp32.
            out = self._absorbed(
                q_nope.float(), q_pe.float(), latent.float(), step, self.w_kvb.float()
            )
            return out.to(q_nope.dtype)
        b, t, hd, _ = q_nope.shape
        ctx = latent.shape[1]
        w = (self.w_kvb if w_kvb is None else w_kvb).view(hd, self.nope + self.v_dim, self.kv_lora)
        # Query side of the absorbed product: [hd, B*T, nope] @ [hd, nope, kv_lora].
        qn = q_nope.permute(2, 0, 1, 3).reshape(hd, b * t, self.nope)
        q_lat = torch.bmm(qn, w[:, : self.nope])  # [hd, B*T, kv_lora]
        q_full = torch.empty(
            b, t, hd, self.kv_lora + self.rope, dtype=q_nope.dtype, device=q_nope.device
        )
        q_full[..., : self.kv_lora] = q_lat.view(hd, b, t, self.kv_lora).permute(1, 2, 0, 3)
        q_full[..., self.kv_lora :] = q_pe
        scores = torch.bmm(q_full.view(b, t * hd, -1), latent.transpose(1, 2))  # [B, T*hd, ctx]
        scores = scores.view(b, t, hd, ctx)
        scores.mul_(self.scale)
        if step.allowed is not None:
            scores.masked_fill_(~step.allowed[:, :, None, :], float("-inf"))
        elif t > 1:
            q_pos = torch.arange(step.start, step.end, device=scores.device)
            k_pos = torch.arange(ctx, device=scores.device)
            scores.masked_fill_((k_pos[None, :] > q_pos[:, None])[None, :, None, :], float("-inf"))
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(latent.dtype)
        o_lat = torch.bmm(
            probs.view(b, t * hd, ctx), latent[..., : self.kv_lora]
        )  # [B, T*hd, kv_lora]
        o_lat = o_lat.view(b * t, hd, self.kv_lora).transpose(0, 1)  # [hd, B*T, kv_lora]
        o = torch.bmm(o_lat, w[:, self.nope :].transpose(1, 2))  # [hd, B*T, v]
        return o.transpose(0, 1).reshape(b, t, hd * self.v_dim)

    def _expanded_chunked(
        self, q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, step: StepInfo
    ) -> torch.Tensor:
        """Expanded attention for unpadded sequences, in blocks of ``_CHUNK`` queries.

        Each block scores only the keys it may see (0..its last position), so the causal half
        of the score matrix is never computed, and a block's scores stay in L2 for the softmax
        and the value product. Keys are rebuilt per head ``[hd, ctx, nope + rope]`` once; values
        are read in place from the expansion (no padding to a common head dim, which the fused
        SDPA kernel needs here). At 1 thread this is ~25% faster than SDPA's flash kernel.
        """
        b, t, hd, nope = q_nope.shape
        ctx = latent.shape[1]
        kvl, vd, qk = self.kv_lora, self.v_dim, self.qk_dim
        out = torch.empty(b, t, hd, vd, dtype=q_nope.dtype, device=q_nope.device)
        tri = torch.ones(_CHUNK, _CHUNK, dtype=torch.bool, device=q_nope.device).triu_(1)
        for row in range(b):
            lat = latent[row]
            # [ctx, hd, nope + v], the same product (and summation order) as the reference's
            kv = F.linear(lat[:, :kvl], self.w_kvb).view(ctx, hd, nope + vd).transpose(0, 1)
            k = kv.new_empty(hd, ctx, qk)
            k[..., :nope] = kv[..., :nope]
            k[..., nope:] = lat[None, :, kvl:]
            v = kv[..., nope:]
            # Queries per head: [hd, t, qk].
            qh = kv.new_empty(hd, t, qk)
            qh[..., :nope] = q_nope[row].transpose(0, 1)
            qh[..., nope:] = q_pe[row].transpose(0, 1)
            o = out[row].transpose(0, 1)  # [hd, t, v] view of the output
            for s in range(0, t, _CHUNK):
                e = min(s + _CHUNK, t)
                last = step.start + e  # keys visible to this block's last query
                scores = torch.bmm(qh[:, s:e], k[:, :last].transpose(1, 2))  # [hd, c, last]
                scores.mul_(self.scale)
                first = step.start + s
                scores[:, :, first:last].masked_fill_(tri[: e - s, : e - s], float("-inf"))
                probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
                if probs.dtype != v.dtype:
                    probs = probs.to(v.dtype)
                o[:, s:e] = torch.bmm(probs, v[:, :last])
        return out.view(b, t, hd * vd)

    def _expanded(
        self,
        q_nope: torch.Tensor,
        q_pe: torch.Tensor,
        latent: torch.Tensor,
        step: StepInfo,
        causal_prefill: bool,
    ) -> torch.Tensor:
        b, t, hd, _ = q_nope.shape
        ctx = latent.shape[1]
        kv = F.linear(latent[..., : self.kv_lora], self.w_kvb).view(
            b, ctx, hd, self.nope + self.v_dim
        )
        # SDPA's fused CPU kernel (flash, causal blocks skipped) needs one head dim for q, k and
        # v; with v_head_dim != qk_head_dim it falls back to a ~3x slower path. So pad the smaller
        # side with zeros: zero key dims add nothing to q.k, zero value dims are cropped.
        width = max(self.qk_dim, self.v_dim)
        k = (
            kv.new_zeros(b, hd, ctx, width)
            if width > self.qk_dim
            else kv.new_empty(b, hd, ctx, width)
        )
        k[..., : self.nope] = kv[..., : self.nope].transpose(1, 2)
        k[..., self.nope : self.qk_dim] = latent[:, None, :, self.kv_lora :]
        if self.v_dim == width:
            v = kv[..., self.nope :].transpose(1, 2)
        else:
            v = kv.new_zeros(b, hd, ctx, width)
            v[..., : self.v_dim] = kv[..., self.nope :].transpose(1, 2)
        q = torch.cat((q_nope, q_pe), dim=-1).transpose(1, 2)  # [B, hd, T, qk]
        if width > self.qk_dim:
            q = F.pad(q, (0, width - self.qk_dim))
        if causal_prefill:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        else:
            if step.allowed is not None:
                mask = step.allowed[:, None]
            else:
                q_pos = torch.arange(step.start, step.end, device=q.device)
                mask = (torch.arange(ctx, device=q.device)[None, :] <= q_pos[:, None])[None, None]
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return o[..., : self.v_dim].transpose(1, 2).reshape(b, t, hd * self.v_dim)
