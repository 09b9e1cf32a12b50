"""The weight-key contract: our model speaks the on-disk HF DeepseekV3ForCausalLM layout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agent_runtime.model.config import MoEConfig
from agent_runtime.model.transformer import MoEForCausalLM

CFG = {
    "model_type": "deepseek_v3",
    "vocab_size": 120,
    "hidden_size": 48,
    "intermediate_size": 80,
    "moe_intermediate_size": 16,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "q_lora_rank": 24,
    "kv_lora_rank": 16,
    "qk_nope_head_dim": 8,
    "qk_rope_head_dim": 4,
    "v_head_dim": 8,
    "n_routed_experts": 4,
    "num_experts_per_tok": 2,
    "n_shared_experts": 1,
    "first_k_dense_replace": 1,
    "n_group": 1,
    "topk_group": 1,
}


def test_parameter_keys_and_shapes_equal_what_transformers_writes(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from safetensors import safe_open

    torch.manual_seed(0)
    ref = transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(**CFG))
    ref.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        on_disk = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    ours = MoEForCausalLM(MoEConfig.from_hf(tmp_path), init="meta")
    assert ours.hf_parameter_shapes() == on_disk
    assert "model.layers.2.mlp.experts.3.up_proj.weight" in on_disk
    # and the files' tensors load through the contract into a working model
    model = MoEForCausalLM(MoEConfig.from_hf(tmp_path), init="empty")
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        for k in f.keys():
            model.load_hf_tensor(k, f.get_tensor(k))
    assert model.missing_hf_keys() == []
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        expected = ref.eval()(ids).logits
    torch.testing.assert_close(model(ids), expected, atol=1e-4, rtol=1e-4)


def test_q_proj_layout_without_low_rank_query() -> None:
    shapes = MoEForCausalLM(
        MoEConfig.from_hf({**CFG, "q_lora_rank": None}), init="meta"
    ).hf_parameter_shapes()
    assert shapes["model.layers.0.self_attn.q_proj.weight"] == (2 * 12, 48)
    assert not any("q_a_proj" in k or "q_b_proj" in k for k in shapes)


def test_load_errors_name_the_key_and_both_shapes() -> None:
    model = MoEForCausalLM(MoEConfig.from_hf(CFG), init="empty")
    with pytest.raises(KeyError, match="model.layers.9.mlp.gate.weight"):
        model.load_hf_tensor("model.layers.9.mlp.gate.weight", torch.zeros(4, 48))
    with pytest.raises(ValueError, match=r"kv_b_proj.weight.*\(5, 16\).*\(32, 16\)"):
        model.load_hf_tensor("model.layers.0.self_attn.kv_b_proj.weight", torch.zeros(5, 16))
    assert len(model.missing_hf_keys()) == len(model.hf_parameter_shapes())
    model.load_hf_tensor("model.norm.weight", torch.full((48,), 2.0, dtype=torch.float64))
    assert "model.norm.weight" not in model.missing_hf_keys()
    assert model.norm.dtype == torch.float32 and float(model.norm[0]) == 2.0


def test_mtp_layers_and_rotary_buffers_are_ignored_nothing_else() -> None:
    model = MoEForCausalLM(MoEConfig.from_hf(CFG), init="meta")
    assert model.is_ignored_hf_key("model.layers.3.eh_proj.weight")
    assert model.is_ignored_hf_key("model.layers.0.self_attn.rotary_emb.inv_freq")
    assert not model.is_ignored_hf_key("model.layers.2.mlp.gate.weight")
    assert not model.is_ignored_hf_key("model.bogus.weight")


def test_state_items_round_trip_into_a_fresh_model() -> None:
    src = MoEForCausalLM(MoEConfig.from_hf(CFG), seed=4)
    dst = MoEForCausalLM(MoEConfig.from_hf(CFG), init="meta")
    dst.materialize("cpu")
    items = dict(src.hf_state_items())
    assert set(items) == set(src.hf_parameter_shapes())
    assert items["model.layers.1.mlp.gate.weight"].dtype == torch.float32
    for k, t in items.items():
        assert tuple(t.shape) == src.hf_parameter_shapes()[k]
        dst.load_hf_tensor(k, t.contiguous())
    ids = torch.tensor([[9, 8, 7, 6]])
    torch.testing.assert_close(dst(ids), src(ids), atol=0, rtol=0)


def test_bf16_model_keeps_the_router_in_fp32() -> None:
    model = MoEForCausalLM(MoEConfig.from_hf(CFG), dtype=torch.bfloat16, seed=1)
    items = dict(model.hf_state_items())
    assert items["model.layers.1.mlp.gate.weight"].dtype == torch.float32
    assert items["model.layers.1.mlp.gate.e_score_correction_bias"].dtype == torch.float32
    assert items["model.layers.1.mlp.experts.0.gate_proj.weight"].dtype == torch.bfloat16
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]]))).all()


def test_cache_grows_and_truncates() -> None:
    model = MoEForCausalLM(MoEConfig.from_hf(CFG), seed=4)
    cache = model.new_cache(1, capacity=2)
    full = model(torch.tensor([[1, 2, 3, 4, 5, 6]]))
    model(torch.tensor([[1, 2, 3]]), cache)
    assert cache.capacity >= 3 and cache.length == 3
    model(torch.tensor([[99]]), cache)
    cache.truncate(3)
    rest = model(torch.tensor([[4, 5, 6]]), cache)
    torch.testing.assert_close(rest, full[:, 3:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        cache.truncate(10)


def test_importing_the_package_and_config_does_not_import_torch() -> None:
    code = (
        "import sys, agent_runtime, agent_runtime.model, agent_runtime.model.config;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
