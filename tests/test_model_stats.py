"""Router statistics and parameter accounting."""

from __future__ import annotations

import pytest
import torch
from model_support import small_moe_config

from agent_runtime.model.config import MoEConfig
from agent_runtime.model.generation import SamplingParams, generate
from agent_runtime.model.stats import RouterStats, parameter_breakdown
from agent_runtime.model.transformer import MoEForCausalLM

CFG = small_moe_config()


@pytest.fixture()
def model() -> MoEForCausalLM:
    return MoEForCausalLM(MoEConfig.from_hf(CFG), seed=2)


def test_counts_cover_every_token_and_only_moe_layers(model: MoEForCausalLM) -> None:
    stats = RouterStats(model)
    assert stats.layers == [2, 3]
    model(torch.arange(9)[None])
    assert stats.counts() == {2: [0] * 8, 3: [0] * 8}  # off by default
    stats.enable()
    model(torch.arange(9)[None])
    counts = stats.counts()
    assert all(sum(row) == 9 * 3 for row in counts.values())
    assert stats.tokens_routed() == 9
    load = stats.load()
    assert all(abs(sum(row) - 1.0) < 1e-9 for row in load.values())
    summary = stats.summary()
    assert summary["tokens"] == 9
    assert summary["layers"]["2"]["imbalance"] >= 1.0
    assert summary["active_parameters_per_token"] < summary["total_parameters"]


def test_counts_match_the_router_decisions(model: MoEForCausalLM) -> None:
    stats = RouterStats(model)
    stats.enable()
    ids = torch.tensor([[5, 6, 7, 8]])
    model(ids)
    from agent_runtime.model.moe import MoEBlock, route

    # Recompute layer 2's routing from its input and compare the histogram.
    block = model.layers[2].mlp
    assert isinstance(block, MoEBlock)
    captured: list[torch.Tensor] = []
    original = block.forward

    def spy(x: torch.Tensor) -> torch.Tensor:
        captured.append(x.reshape(-1, x.shape[-1]).clone())
        out: torch.Tensor = original(x)
        return out

    block.forward = spy
    try:
        stats.reset()
        model(ids)
    finally:
        del block.forward
    _, idx = route(
        captured[0],
        block.gate_w,
        block.gate_bias,
        top_k=3,
        n_group=1,
        topk_group=1,
        norm_topk_prob=True,
        scaling=1.5,
    )
    expected = torch.bincount(idx.reshape(-1), minlength=8).tolist()
    assert stats.counts()[2] == expected


def test_decode_steps_are_counted_and_padding_is_not(model: MoEForCausalLM) -> None:
    stats = RouterStats(model)
    stats.enable()
    generate(model, [[1, 2, 3, 4, 5], [9]], SamplingParams(max_new_tokens=4, stop_token_ids=()))
    # 5 + 1 prompt tokens, then 3 decode forwards of 2 rows (the 4th token needs no forward)
    assert stats.tokens_routed() == 6 + 3 * 2
    stats.disable()
    assert not stats.enabled
    assert stats.counts()[3] == [0] * 8


def test_parameter_counts_agree_with_the_weights(model: MoEForCausalLM) -> None:
    cfg = model.config
    total = sum(t.numel() for _, t in model.hf_state_items())
    pb = parameter_breakdown(cfg)
    assert pb.total == total == cfg.parameter_count()
    assert pb.active_per_token == cfg.active_parameters_per_token()
    expert = 3 * 64 * 24
    assert pb.total - pb.active_per_token == pb.embedding + 2 * (8 - 3) * expert
    assert model.active_parameters_per_token() == pb.active_per_token
    # one decode token reads the active weights (router in fp32) plus one embedding row
    assert model.weight_bytes_per_token() == 4 * (pb.active_per_token + 64)
