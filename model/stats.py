"""Router statistics: how often each expert is chosen, and how many weights a token really uses.

Counting costs one ``bincount`` per MoE layer and forward, so it is off until :meth:`enable`.
Left-padding tokens of a batched generation are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .config import MoEConfig
from .moe import MoEBlock
from .transformer import DecoderLayer, MoEForCausalLM

__all__ = ["ParameterBreakdown", "RouterStats", "parameter_breakdown"]


@dataclass(frozen=True)
class ParameterBreakdown:
    """Weights per component, for the whole model and for what one token activates."""

    embedding: int
    attention: int
    dense_mlp: int
    shared_experts: int
    routed_experts_total: int
    routed_experts_active: int
    routers: int
    norms: int
    lm_head: int

    @property
    def total(self) -> int:
        return (
            self.embedding
            + self.attention
            + self.dense_mlp
            + self.shared_experts
            + self.routed_experts_total
            + self.routers
            + self.norms
            + self.lm_head
        )

    @property
    def active_per_token(self) -> int:
        """Everything a token's forward multiplies with (the embedding row lookup excluded)."""
        return (
            self.attention
            + self.dense_mlp
            + self.shared_experts
            + self.routed_experts_active
            + self.routers
            + self.norms
            + self.lm_head
        )


def parameter_breakdown(config: MoEConfig) -> ParameterBreakdown:
    """Count parameters per component from the config alone (no weights needed)."""
    c = config
    h = c.hidden_size
    if c.q_lora_rank is None:
        q = h * c.num_attention_heads * c.qk_head_dim
    else:
        q = h * c.q_lora_rank + c.q_lora_rank * c.num_attention_heads * c.qk_head_dim
    kv = h * (c.kv_lora_rank + c.qk_rope_head_dim)
    kv += c.kv_lora_rank * c.num_attention_heads * (c.qk_nope_head_dim + c.v_head_dim)
    o = c.num_attention_heads * c.v_head_dim * h
    moe_layers = sum(1 for i in range(c.num_hidden_layers) if c.is_moe_layer(i))
    dense_layers = c.num_hidden_layers - moe_layers
    expert = 3 * h * c.moe_intermediate_size
    norms_per_layer = 2 * h + c.kv_lora_rank + (c.q_lora_rank or 0)
    return ParameterBreakdown(
        embedding=c.vocab_size * h,
        attention=c.num_hidden_layers * (q + kv + o),
        dense_mlp=dense_layers * 3 * h * c.intermediate_size,
        shared_experts=moe_layers * c.n_shared_experts * expert,
        routed_experts_total=moe_layers * c.n_routed_experts * expert,
        routed_experts_active=moe_layers * c.num_experts_per_tok * expert,
        routers=moe_layers * c.n_routed_experts * (h + 1),
        norms=c.num_hidden_layers * norms_per_layer + h,
        lm_head=c.vocab_size * h,
    )


class RouterStats:
    """Per-layer expert selection counts of a model, switched on and off at will."""

    def __init__(self, model: MoEForCausalLM) -> None:
        self._blocks: dict[int, MoEBlock] = {}
        for i, layer in enumerate(model.layers):
            assert isinstance(layer, DecoderLayer)
            if isinstance(layer.mlp, MoEBlock):
                self._blocks[i] = layer.mlp
        self._config = model.config

    @property
    def layers(self) -> list[int]:
        """Indices of the MoE layers, in order."""
        return list(self._blocks)

    @property
    def enabled(self) -> bool:
        return any(b.load_counts is not None for b in self._blocks.values())

    def enable(self) -> None:
        for b in self._blocks.values():
            if b.load_counts is None:
                b.load_counts = torch.zeros(b.n_experts, dtype=torch.long, device=b.w13.device)

    def disable(self) -> None:
        """Stop counting; counts gathered so far are dropped."""
        for b in self._blocks.values():
            b.load_counts = None

    def reset(self) -> None:
        for b in self._blocks.values():
            if b.load_counts is not None:
                b.load_counts.zero_()

    def counts(self) -> dict[int, list[int]]:
        """Layer index -> number of (token, expert) selections per expert."""
        out: dict[int, list[int]] = {}
        for i, b in self._blocks.items():
            out[i] = [0] * b.n_experts if b.load_counts is None else b.load_counts.tolist()
        return out

    def load(self) -> dict[int, list[float]]:
        """Layer index -> fraction of the layer's selections that went to each expert."""
        out: dict[int, list[float]] = {}
        for i, row in self.counts().items():
            total = sum(row)
            out[i] = [x / total if total else 0.0 for x in row]
        return out

    def tokens_routed(self) -> int:
        """Tokens counted so far (per layer; every token picks top-k experts in each layer)."""
        first = next(iter(self.counts().values()), [])
        return sum(first) // max(1, self._config.num_experts_per_tok)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready view: per layer the counts, max/mean imbalance and unused experts."""
        layers: dict[str, Any] = {}
        for i, row in self.counts().items():
            total = sum(row)
            mean = total / len(row) if row else 0.0
            layers[str(i)] = {
                "counts": row,
                "imbalance": (max(row) / mean) if mean else 0.0,
                "unused_experts": sum(1 for x in row if x == 0),
            }
        pb = parameter_breakdown(self._config)
        return {
            "tokens": self.tokens_routed(),
            "layers": layers,
            "active_parameters_per_token": pb.active_per_token,
            "total_parameters": pb.total,
        }
