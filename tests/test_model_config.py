"""Reading HF config.json files into MoEConfig: every field honoured or refused, round trips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent_runtime.errors import ConfigError
from agent_runtime.model.config import MoEConfig, UnsupportedConfigError

# Shaped like Kimi-K2-Instruct-0905's config.json (256K context: YaRN factor 64), a base for
# field-by-field edits; the released files themselves are read in test_model_config_released.py.
KIMI_K2: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config"},
    "aux_loss_alpha": 0.001,
    "bos_token_id": 163584,
    "eos_token_id": 163585,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 7168,
    "initializer_range": 0.02,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 262144,
    "model_type": "kimi_k2",
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 1,
    "n_routed_experts": 384,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 64,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 64,
    "num_nextn_predict_layers": 0,
    "pretraining_tp": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "quantization_config": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [128, 128],
    },
    "rms_norm_eps": 1e-06,
    "rope_theta": 50000.0,
    "rope_scaling": {
        "beta_fast": 1.0,
        "beta_slow": 1.0,
        "factor": 64.0,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
    "routed_scaling_factor": 2.827,
    "scoring_func": "sigmoid",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 1,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.48.3",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 163840,
}


def test_kimi_k2_config_is_read_with_every_architecture_field() -> None:
    cfg = MoEConfig.from_hf(KIMI_K2)
    assert cfg.model_type == "kimi_k2"
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (7168, 61, 64)
    assert (cfg.q_lora_rank, cfg.kv_lora_rank, cfg.qk_head_dim, cfg.v_head_dim) == (
        1536,
        512,
        192,
        128,
    )
    assert (cfg.n_routed_experts, cfg.num_experts_per_tok, cfg.n_shared_experts) == (384, 8, 1)
    assert cfg.rope_type == "yarn" and cfg.rope_theta == 50000.0
    assert cfg.is_fp8 and cfg.torch_dtype == "bfloat16"
    assert cfg.eos_token_ids == (163585,)
    assert not cfg.is_moe_layer(0) and cfg.is_moe_layer(1) and cfg.is_moe_layer(60)
    # softmax scale: 192^-0.5 * (1 + 0.1 ln 64)^2
    assert cfg.softmax_scale() == pytest.approx(192**-0.5 * (1 + 0.1 * 4.1588830833596715) ** 2)
    # ~1.03T parameters, ~32B active, as published for K2
    assert 1.02e12 < cfg.parameter_count() < 1.04e12
    assert 3.0e10 < cfg.active_parameters_per_token() < 3.4e10


def test_config_round_trips_through_to_hf_dict(tmp_path: Path) -> None:
    cfg = MoEConfig.from_hf(KIMI_K2)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_hf_dict()))
    again = MoEConfig.from_hf(tmp_path)  # a directory reads DIR/config.json
    assert again == cfg
    written = json.loads(path.read_text())
    assert written["rope_scaling"]["factor"] == 64.0
    assert written["quantization_config"]["weight_block_size"] == [128, 128]
    assert written["aux_loss_alpha"] == 0.001  # inert fields survive


def test_transformers_style_rope_parameters_are_understood() -> None:
    raw = dict(KIMI_K2)
    del raw["rope_scaling"], raw["rope_theta"]
    raw["model_type"] = "deepseek_v3"
    raw["rope_parameters"] = {**KIMI_K2["rope_scaling"], "rope_type": "yarn", "rope_theta": 50000.0}
    cfg = MoEConfig.from_hf(raw)
    assert cfg.rope_theta == 50000.0 and cfg.rope_type == "yarn"
    plain = MoEConfig.from_hf(
        {**raw, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}
    )
    assert plain.rope_scaling is None and plain.rope_type == "default" and plain.rope_theta == 1e4


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("scoring_func", "softmax", "scoring_func"),
        ("topk_method", "group_limited_greedy", "topk_method"),
        ("hidden_act", "gelu", "hidden_act"),
        ("attention_bias", True, "attention_bias"),
        ("tie_word_embeddings", True, "tie_word_embeddings"),
        ("moe_layer_freq", 2, "moe_layer_freq"),
        ("n_group", 5, "n_group"),
        ("topk_group", 2, "topk_group"),
        ("num_experts_per_tok", 500, "num_experts_per_tok"),
        ("rope_scaling", {"type": "linear", "factor": 2.0}, "rope_scaling"),
        ("rope_scaling", {"type": "yarn", "factor": 4.0}, "original_max_position_embeddings"),
        ("quantization_config", {"quant_method": "gptq", "bits": 4}, "quantization_config"),
        ("model_type", "llama", "model_type"),
        ("qk_rope_head_dim", 63, "qk_rope_head_dim"),
    ],
)
def test_unsupported_settings_are_refused_with_the_field_named(
    field: str, value: Any, needle: str
) -> None:
    with pytest.raises(UnsupportedConfigError, match=needle) as info:
        MoEConfig.from_hf({**KIMI_K2, field: value})
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)


def test_unreadable_config_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json"):
        MoEConfig.from_hf(tmp_path)


def test_unknown_keys_are_kept_and_listed() -> None:
    cfg = MoEConfig.from_hf({**KIMI_K2, "some_future_knob": 3})
    assert cfg.extra["_unknown_keys"] == ["some_future_knob"]
    assert cfg.to_hf_dict()["some_future_knob"] == 3
