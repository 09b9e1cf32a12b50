"""The released config.json files of DeepSeek-V3 and Kimi K2 (written out in tests/data, see the
README there) read into the published model sizes, and into the same parameter count as
transformers' own model built from the same file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from agent_runtime.model.config import MoEConfig

DATA = Path(__file__).parent / "data" / "model_configs"


def released(name: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((DATA / f"{name}.config.json").read_text())
    return raw


def test_deepseek_v3_as_released_gives_the_published_sizes() -> None:
    cfg = MoEConfig.from_hf(DATA / "deepseek_v3.config.json")
    assert cfg.model_type == "deepseek_v3"
    assert (cfg.n_routed_experts, cfg.num_experts_per_tok, cfg.n_group, cfg.topk_group) == (
        256,
        8,
        8,
        4,
    )
    assert not cfg.is_moe_layer(2) and cfg.is_moe_layer(3)
    # 671B parameters (the MTP module aside) and ~37B active per token
    assert 670e9 < cfg.parameter_count() < 672e9
    assert 37.0e9 < cfg.active_parameters_per_token(include_embedding=True) < 38.0e9
    assert cfg.softmax_scale() == pytest.approx(192**-0.5 * (1 + 0.1 * math.log(40)) ** 2)
    assert cfg.extra["_unknown_keys"] == []


@pytest.mark.parametrize(
    ("name", "factor", "positions"),
    [("kimi_k2_instruct", 32.0, 131072), ("kimi_k2_instruct_0905", 64.0, 262144)],
)
def test_kimi_k2_as_released_gives_the_published_sizes(
    name: str, factor: float, positions: int
) -> None:
    cfg = MoEConfig.from_hf(DATA / f"{name}.config.json")
    assert cfg.model_type == "kimi_k2"
    assert cfg.rope_scaling is not None and cfg.rope_scaling["factor"] == factor
    assert cfg.max_position_embeddings == positions
    assert (cfg.n_routed_experts, cfg.num_experts_per_tok, cfg.n_group) == (384, 8, 1)
    assert not cfg.is_moe_layer(0) and cfg.is_moe_layer(1) and cfg.is_moe_layer(60)
    assert cfg.eos_token_ids == (163585,)
    # ~1.03T parameters, ~32B active, as published for K2
    assert 1.02e12 < cfg.parameter_count() < 1.04e12
    assert 3.0e10 < cfg.active_parameters_per_token() < 3.4e10
    assert cfg.softmax_scale() == pytest.approx(192**-0.5 * (1 + 0.1 * math.log(factor)) ** 2)
    assert cfg.extra["_unknown_keys"] == []


@pytest.mark.parametrize("name", ["deepseek_v3", "kimi_k2_instruct"])
def test_parameter_count_equals_transformers_model_built_from_the_same_file(name: str) -> None:
    """Counted on transformers' model with 4 layers (on the meta device, no memory): the count
    is per layer, so 4 layers with dense and MoE ones check every term."""
    transformers = pytest.importorskip("transformers")
    raw = released(name)
    raw["model_type"] = "deepseek_v3"  # transformers does not know "kimi_k2"
    raw.pop("quantization_config")  # counting only: no FP8 modules on meta
    raw["num_hidden_layers"] = 4
    with torch.device("meta"):
        ref = transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(**raw))
    want = sum(p.numel() for p in ref.parameters())
    # transformers keeps the router bias as a buffer; it is a checkpoint tensor all the same
    want += sum(b.numel() for n, b in ref.named_buffers() if "e_score_correction_bias" in n)
    ours = MoEConfig.from_hf({**released(name), "num_hidden_layers": 4})
    assert ours.parameter_count() == want
