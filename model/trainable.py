"""A differentiable DeepSeek-V3 / Kimi K2 model for training small models from scratch.

The inference engine (:mod:`.transformer`) stores weights in fused, transposed layouts and runs
without autograd. This module is the plain training counterpart: ordinary ``nn.Linear`` modules
named exactly like the Hugging Face checkpoint keys, so :meth:`TrainableMoE.hf_state_dict` is
the checkpoint and :meth:`TrainableMoE.save_pretrained` writes a folder that
:func:`.checkpoint.load_checkpoint` loads into the engine, which then computes the same logits.

What it computes, as the engine does:

* MLA: ``q = q_b_proj(q_a_layernorm(q_a_proj(x)))`` (or ``q_proj(x)`` without ``q_lora_rank``);
  ``kv_a_proj_with_mqa(x)`` splits into the latent (normed by ``kv_a_layernorm``, expanded by
  ``kv_b_proj`` into per-head ``k_nope`` and ``v``) and one rotary key ``k_pe`` shared by all
  heads. Rope (YaRN included, via :func:`.layers.yarn_inv_freq`) rotates adjacent pairs when
  ``rope_interleave``, else the two halves. Causal attention; with ``doc_ids`` (sequence packing)
  only within a document, padding (doc id -1) seen by no other token.
* MoE: sigmoid router scores in fp32; ``scores + e_score_correction_bias`` choose the top-k
  experts (the bias only chooses, it gets no gradient); the chosen raw scores, normalised when
  ``norm_topk_prob`` and times ``routed_scaling_factor``, weight the SwiGLU experts' outputs;
  shared experts are added. Tokens are sorted by expert so each expert runs one matmul chain.
* Aux-loss-free balancing (DeepSeek-V3): each MoE layer keeps the per-expert token counts of the
  last forward; :meth:`TrainableMoE.update_router_bias` nudges the bias of under-loaded experts
  up and of over-loaded ones down.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from .checkpoint import CONFIG_NAME, INDEX_NAME, SINGLE_FILE_NAME
from .config import MoEConfig
from .layers import yarn_inv_freq
from .moe import select_experts

__all__ = ["TrainableMoE"]

_INIT_STD = 0.02
# Weights that write into the residual stream get the GPT-2 / nanoGPT depth scaling.
_RESIDUAL_OUT = ("o_proj.weight", "down_proj.weight")
_ROUTER_BIAS = "e_score_correction_bias"


class RMSNorm(nn.Module):
    """``x / rms(x) * weight`` in fp32 (the engine's :func:`.layers.rms_norm`)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight, self.eps)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleave: bool) -> torch.Tensor:
    """Rotate the pairs of the last dim of ``x`` by angles whose cos/sin broadcast against
    ``x[..., : d / 2]``: adjacent pairs (x0, x1), (x2, x3), ... with ``interleave`` (output kept
    in place, as the engine does), else (x_i, x_{i + d/2})."""
    if interleave:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def _pad_last(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x`` with zero columns appended to its last dim up to ``width``."""
    return x if x.shape[-1] == width else F.pad(x, (0, width - x.shape[-1]))


class MLP(nn.Module):
    """SwiGLU feed-forward: ``down_proj(silu(gate_proj(x)) * up_proj(x))``."""

    def __init__(self, hidden: int, inter: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return out


class Attention(nn.Module):
    """Multi-head latent attention, expanded form (per-head keys/values rebuilt from the latent)."""

    def __init__(self, config: MoEConfig) -> None:
        super().__init__()
        c = config
        h = c.hidden_size
        self.heads = c.num_attention_heads
        self.nope = c.qk_nope_head_dim
        self.rope = c.qk_rope_head_dim
        self.v_dim = c.v_head_dim
        self.kv_lora = c.kv_lora_rank
        self.interleave = c.rope_interleave
        self.scale = c.softmax_scale()
        q_out = self.heads * c.qk_head_dim
        self.q_proj: nn.Linear | None = None
        self.q_a_proj: nn.Linear | None = None
        self.q_a_layernorm: RMSNorm | None = None
        self.q_b_proj: nn.Linear | None = None
        if c.q_lora_rank is None:
            self.q_proj = nn.Linear(h, q_out, bias=False)
        else:
            self.q_a_proj = nn.Linear(h, c.q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(c.q_lora_rank, c.rms_norm_eps)
            self.q_b_proj = nn.Linear(c.q_lora_rank, q_out, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(h, self.kv_lora + self.rope, bias=False)
        self.kv_a_layernorm = RMSNorm(self.kv_lora, c.rms_norm_eps)
        self.kv_b_proj = nn.Linear(self.kv_lora, self.heads * (self.nope + self.v_dim), bias=False)
        self.o_proj = nn.Linear(self.heads * self.v_dim, h, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """``x`` [B, T, H]; ``cos``/``sin`` [B, 1, T, rope/2]; ``mask`` [B, 1, T, T] bool of the
        allowed (query, key) pairs, or None for plain causal attention."""
        b, t, _ = x.shape
        hd = self.heads
        if self.q_proj is not None:
            q: torch.Tensor = self.q_proj(x)
        else:
            assert self.q_a_proj is not None
            assert self.q_a_layernorm is not None and self.q_b_proj is not None
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(b, t, hd, self.nope + self.rope).transpose(1, 2)  # [B, hd, T, qk]
        q_nope, q_pe = torch.split(q, [self.nope, self.rope], dim=-1)
        kv_a: torch.Tensor = self.kv_a_proj_with_mqa(x)
        latent, k_pe = torch.split(kv_a, [self.kv_lora, self.rope], dim=-1)
        kv: torch.Tensor = self.kv_b_proj(self.kv_a_layernorm(latent))
        kv = kv.view(b, t, hd, self.nope + self.v_dim).transpose(1, 2)
        k_nope, v = torch.split(kv, [self.nope, self.v_dim], dim=-1)
        q_pe = rotate(q_pe, cos, sin, self.interleave)
        k_pe = rotate(k_pe[:, None], cos, sin, self.interleave)  # [B, 1, T, rope]: shared
        query = torch.cat((q_nope, q_pe), dim=-1)
        key = torch.cat((k_nope, k_pe.expand(b, hd, t, self.rope)), dim=-1)
        # The fused (flash) SDPA kernels want one head dim for q, k and v; zero columns change
        # neither the scores (the scale is explicit) nor the kept output columns. On CPU the
        # fused kernel is ~2x faster than the unfused math path, masks included.
        width = max(self.nope + self.rope, self.v_dim)
        out = F.scaled_dot_product_attention(
            _pad_last(query, width),
            _pad_last(key, width),
            _pad_last(v, width),
            attn_mask=mask,
            is_causal=mask is None,
            scale=self.scale,
        )[..., : self.v_dim]
        result: torch.Tensor = self.o_proj(out.transpose(1, 2).reshape(b, t, hd * self.v_dim))
        return result


class Gate(nn.Module):
    """Router weights ``[E, H]`` (trained) and the selection bias (a buffer: no gradient, set
    by :meth:`TrainableMoE.update_router_bias`, saved under its HF key)."""

    e_score_correction_bias: torch.Tensor

    def __init__(self, hidden: int, n_experts: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_experts, hidden))
        self.register_buffer(_ROUTER_BIAS, torch.zeros(n_experts))


class MoE(nn.Module):
    """Router, routed experts and shared experts of one layer."""

    load: torch.Tensor

    def __init__(self, config: MoEConfig) -> None:
        super().__init__()
        c = config
        self.n_experts = c.n_routed_experts
        self.top_k = c.num_experts_per_tok
        self.n_group = c.n_group
        self.topk_group = c.topk_group
        self.norm_topk_prob = c.norm_topk_prob
        self.scaling = float(c.routed_scaling_factor)
        self.gate = Gate(c.hidden_size, self.n_experts)
        self.experts = nn.ModuleList(
            MLP(c.hidden_size, c.moe_intermediate_size) for _ in range(self.n_experts)
        )
        self.shared_experts: MLP | None = None
        if c.n_shared_experts > 0:
            inter = c.moe_intermediate_size * c.n_shared_experts
            self.shared_experts = MLP(c.hidden_size, inter)
        # Tokens routed to each expert by the last forward (padding excluded); not saved.
        self.register_buffer(
            "load", torch.zeros(self.n_experts, dtype=torch.long), persistent=False
        )

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [N, H] -> (weights [N, k] fp32, differentiable; expert ids [N, k])."""
        scores = F.linear(x.float(), self.gate.weight).sigmoid()
        idx = select_experts(
            scores.detach(),
            self.gate.e_score_correction_bias,
            top_k=self.top_k,
            n_group=self.n_group,
            topk_group=self.topk_group,
        )
        weights = scores.gather(1, idx)
        if self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return weights * self.scaling, idx

    def forward(self, x: torch.Tensor, counted: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B, T, H]; ``counted`` [B, T] bool marks the tokens the load counts include."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        weights, idx = self.route(flat)
        with torch.no_grad():
            chosen = idx if counted is None else idx[counted.reshape(-1)]
            self.load.copy_(torch.bincount(chosen.reshape(-1), minlength=self.n_experts))
        # Sort the (token, expert) pairs by expert: each expert then runs on one slice.
        flat_idx = idx.reshape(-1)
        order = torch.argsort(flat_idx, stable=True)
        counts = torch.bincount(flat_idx, minlength=self.n_experts).tolist()
        tokens = order // self.top_k
        xs = flat.index_select(0, tokens)
        outs: list[torch.Tensor] = []
        for e, chunk in enumerate(torch.split(xs, counts)):
            if chunk.shape[0]:
                outs.append(self.experts[e](chunk))
        ys = torch.cat(outs) * weights.reshape(-1)[order, None].to(flat.dtype)
        base = (
            self.shared_experts(flat) if self.shared_experts is not None else torch.zeros_like(flat)
        )
        return base.index_add(0, tokens, ys).view(shape)


class DecoderLayer(nn.Module):
    """Pre-norm residual block: ``x + attn(norm(x))``, then ``+ mlp(norm(x))``."""

    def __init__(self, config: MoEConfig, index: int) -> None:
        super().__init__()
        h = config.hidden_size
        self.input_layernorm = RMSNorm(h, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(h, config.rms_norm_eps)
        self.mlp: MoE | MLP
        if config.is_moe_layer(index):
            self.mlp = MoE(config)
        else:
            self.mlp = MLP(h, config.intermediate_size)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        counted: torch.Tensor | None,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        normed = self.post_attention_layernorm(x)
        mlp_out: torch.Tensor = (
            self.mlp(normed, counted) if isinstance(self.mlp, MoE) else self.mlp(normed)
        )
        return x + mlp_out


class Backbone(nn.Module):
    """``model.*`` of the HF layout: embedding, decoder layers, final norm."""

    def __init__(self, config: MoEConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(config, i) for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


def document_positions(doc_ids: torch.Tensor) -> torch.Tensor:
    """Positions restarting at 0 wherever the doc id changes along a row ([B, T] -> [B, T])."""
    b, t = doc_ids.shape
    index = torch.arange(t, device=doc_ids.device).expand(b, t)
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    first = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    return index - first


def document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """[B, 1, T, T] bool: query i may see key j when j <= i, both carry the same doc id and the
    key is not padding (id < 0). Every token sees itself, so padding rows stay finite."""
    t = doc_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=doc_ids.device).tril()
    same = (doc_ids[:, :, None] == doc_ids[:, None, :]) & (doc_ids >= 0)[:, None, :]
    eye = torch.eye(t, dtype=torch.bool, device=doc_ids.device)
    return ((same & causal) | eye)[:, None]


class TrainableMoE(nn.Module):
    """DeepSeek-V3 / Kimi K2 causal LM with autograd, fp32, parameters named by their HF keys."""

    inv_freq: torch.Tensor

    def __init__(self, config: MoEConfig, seed: int = 0) -> None:
        super().__init__()
        if config.quantization_config is not None:
            raise ValueError(
                "TrainableMoE trains full-precision weights; quantization_config "
                f"{config.quantization_config!r} is not supported"
            )
        self.config = config
        # Built on the meta device and given storage once: no throwaway default init.
        with torch.device("meta"):
            self.model = Backbone(config)
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.to_empty(device="cpu")
        inv_freq, attn_factor = yarn_inv_freq(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.attn_factor = attn_factor
        self.moe_blocks: list[MoE] = [m for m in self.model.layers.modules() if isinstance(m, MoE)]
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int) -> None:
        """Seeded init: matrices ~ N(0, 0.02), the residual output projections (``o_proj``,
        ``down_proj``) scaled by 1/sqrt(2 * layers); norms 1, router bias 0, loads 0."""
        gen = torch.Generator().manual_seed(seed)
        out_std = _INIT_STD / math.sqrt(2 * self.config.num_hidden_layers)
        for name, tensor in self.state_dict(keep_vars=True).items():
            if name.endswith("norm.weight"):
                tensor.fill_(1.0)
            elif name.endswith(_ROUTER_BIAS):
                tensor.zero_()
            else:
                std = out_std if name.endswith(_RESIDUAL_OUT) else _INIT_STD
                tensor.normal_(0.0, std, generator=gen)
        for block in self.moe_blocks:
            block.load.zero_()

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        doc_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``input_ids`` [B, T] -> logits [B, T, vocab] (fp32).

        ``doc_ids`` [B, T] packs several documents per row: attention stays within a document
        and padding (id -1) is attended by no other token and left out of the router loads.
        ``positions`` default to 0.. per document with ``doc_ids``, else 0..T-1. Rows that
        hold one document followed by padding take the fused causal kernel (no mask).
        """
        b, t = input_ids.shape
        if positions is None:
            if doc_ids is None:
                positions = torch.arange(t, device=input_ids.device).expand(b, t)
            else:
                positions = document_positions(doc_ids)
        mask = counted = None
        if doc_ids is not None:
            counted = doc_ids >= 0
            # One document per row, right-padded: plain causal attention is already exact for
            # the real tokens (padding only follows them), and the fused kernel then skips the
            # blocks above the diagonal.
            right_padded = bool((doc_ids <= 0).all()) and bool(
                (doc_ids[:, 1:] <= doc_ids[:, :-1]).all()
            )
            if right_padded:
                mask = None
            else:
                mask = document_mask(doc_ids)
        freqs = positions[:, None, :, None].float() * self.inv_freq  # [B, 1, T, rope/2]
        cos = freqs.cos() * self.attn_factor
        sin = freqs.sin() * self.attn_factor
        x: torch.Tensor = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask, counted)
        logits: torch.Tensor = self.lm_head(self.model.norm(x))
        return logits.float()

    # ------------------------------------------------------------------ load balancing
    def router_loads(self) -> list[torch.Tensor]:
        """Per MoE layer, the tokens routed to each expert by the last forward ([E] int64)."""
        return [block.load.clone() for block in self.moe_blocks]

    @torch.no_grad()
    def update_router_bias(self, rate: float) -> None:
        """DeepSeek-V3's aux-loss-free balancing step: ``bias += rate * sign(mean_load - load)``
        per MoE layer, from the loads of the last forward."""
        for block in self.moe_blocks:
            load = block.load.float()
            block.gate.e_score_correction_bias.add_(torch.sign(load.mean() - load), alpha=rate)

    # ------------------------------------------------------------------ checkpoint
    def hf_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The weights under their HF keys, ``[out, in]``, contiguous, cast to ``dtype`` when
        given; the router bias stays fp32 (as DeepSeek-V3's checkpoints store it: its small
        differences decide expert choices)."""
        out: dict[str, torch.Tensor] = {}
        for key, tensor in self.state_dict().items():
            t = tensor.detach()
            if dtype is not None and not key.endswith(_ROUTER_BIAS):
                t = t.to(dtype)
            out[key] = t.contiguous()
        return out

    def save_pretrained(
        self, path: str | os.PathLike[str], dtype: torch.dtype = torch.bfloat16
    ) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``path`` (created if needed), the
        folder :func:`.checkpoint.load_checkpoint` reads; earlier weight files there are replaced.
        Returns the folder."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        for stale in [root / INDEX_NAME, *root.glob("model-*-of-*.safetensors")]:
            stale.unlink(missing_ok=True)
        save_file(
            self.hf_state_dict(dtype), str(root / SINGLE_FILE_NAME), metadata={"format": "pt"}
        )
        config = self.config.to_hf_dict()
        config.pop("quantization_config", None)
        name = str(dtype).removeprefix("torch.")
        config["dtype"] = name
        config["torch_dtype"] = name
        (root / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return root

    # ------------------------------------------------------------------ facts
    def parameter_count(self) -> int:
        """Every weight of the checkpoint (router biases included)."""
        return sum(t.numel() for t in self.state_dict().values())

    def active_parameters_per_token(self) -> int:
        """Weights one token touches (see :meth:`MoEConfig.active_parameters_per_token`)."""
        return self.config.active_parameters_per_token()
