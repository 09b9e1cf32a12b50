"""Small DeepSeek-V3-shaped HF config dicts shared by the parity tests and the speed benchmark.

One definition keeps every test and benchmark on the same reference shapes (see
``shared/reference.md``: a tiny config that transformers' ``DeepseekV3ForCausalLM`` runs with
eager experts and attention). The dicts are plain ``config.json`` content, accepted both by
``transformers.DeepseekV3Config(**cfg)`` and by ``MoEConfig.from_hf(cfg)``; callers pass
overrides for the few values their case changes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["large_hf_config", "tiny_hf_config"]


def tiny_hf_config(**overrides: Any) -> dict[str, Any]:
    """The tiny reference config (hidden 256, 4 layers, 16 experts top-4, YaRN factor 32) with
    ``overrides`` applied on top; a fresh dict each call, so callers may mutate it."""
    cfg: dict[str, Any] = {
        "model_type": "deepseek_v3",
        "vocab_size": 1000,
        "hidden_size": 256,
        "intermediate_size": 512,
        "moe_intermediate_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "q_lora_rank": 64,
        "kv_lora_rank": 32,
        "qk_nope_head_dim": 32,
        "qk_rope_head_dim": 16,
        "v_head_dim": 32,
        "n_routed_experts": 16,
        "num_experts_per_tok": 4,
        "n_shared_experts": 1,
        "first_k_dense_replace": 1,
        "n_group": 1,
        "topk_group": 1,
        "routed_scaling_factor": 2.827,
        "max_position_embeddings": 131072,
        "rope_theta": 10000.0,
        "rope_scaling": {
            "rope_type": "yarn",
            "factor": 32.0,
            "original_max_position_embeddings": 4096,
            "beta_fast": 32,
            "beta_slow": 1,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
        },
        "bos_token_id": 0,
        "eos_token_id": 1,
    }
    cfg.update(overrides)
    return cfg


def large_hf_config(**overrides: Any) -> dict[str, Any]:
    """The benchmark's "large" config: hidden 1024, 8 layers, 64 experts top-6,
    moe_intermediate 256, vocab 32k (~446M parameters, ~94M active per token); the rest, rope
    included, as in :func:`tiny_hf_config`."""
    large: dict[str, Any] = {
        "vocab_size": 32000,
        "hidden_size": 1024,
        "intermediate_size": 2048,
        "moe_intermediate_size": 256,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "q_lora_rank": 512,
        "kv_lora_rank": 256,
        "qk_nope_head_dim": 64,
        "qk_rope_head_dim": 32,
        "v_head_dim": 64,
        "n_routed_experts": 64,
        "num_experts_per_tok": 6,
    }
    return tiny_hf_config(**{**large, **overrides})
