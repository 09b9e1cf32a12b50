"""The trainable model: same logits as the inference engine loaded from its saved checkpoint,
sequence packing, training steps, aux-loss-free router balancing, deterministic init."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from agent_runtime.model.checkpoint import load_checkpoint
from agent_runtime.model.config import MoEConfig
from agent_runtime.model.presets import tiny_hf_config
from agent_runtime.model.trainable import TrainableMoE
from agent_runtime.model.transformer import MoEForCausalLM

TOL = 1e-4


def _config(**overrides: Any) -> MoEConfig:
    return MoEConfig.from_hf(tiny_hf_config(**overrides))


def _small(**overrides: Any) -> MoEConfig:
    """A smaller config for the training tests: 3 layers (1 dense), 8 experts top-2."""
    base: dict[str, Any] = {
        "vocab_size": 97,
        "hidden_size": 64,
        "intermediate_size": 96,
        "moe_intermediate_size": 32,
        "num_hidden_layers": 3,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "rope_scaling": None,
        "max_position_embeddings": 256,
    }
    return _config(**{**base, **overrides})


def _randomise(model: TrainableMoE, seed: int) -> None:
    """Weights far from the init: non-unit norms, a non-zero router bias (so biased selection
    and unbiased weights differ), larger matrices (sharper attention and routing)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict(keep_vars=True).items():
            if key.endswith("norm.weight"):
                t.normal_(1.0, 0.2, generator=gen)
            elif key.endswith("e_score_correction_bias"):
                t.normal_(0.0, 0.1, generator=gen)
            else:
                t.normal_(0.0, 0.08, generator=gen)


def _ids(vocab: int, *shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="yarn-q_lora"),
        pytest.param({"q_lora_rank": None, "rope_scaling": None}, id="q_proj-no-yarn"),
        pytest.param(
            {"model_type": "kimi_k2", "rope_interleave": False, "n_group": 4, "topk_group": 2},
            id="kimi_k2-halves-grouped",
        ),
        pytest.param(
            {"first_k_dense_replace": 2, "norm_topk_prob": False, "n_shared_experts": 0},
            id="two-dense-unnormalised-no-shared",
        ),
    ],
)
def test_logits_equal_inference_engine_loaded_from_saved_checkpoint(
    tmp_path: Path, overrides: dict[str, Any]
) -> None:
    config = _config(**overrides)
    model = TrainableMoE(config, seed=0)
    _randomise(model, seed=1)
    engine = load_checkpoint(model.save_pretrained(tmp_path, dtype=torch.float32), progress=False)
    ids = _ids(config.vocab_size, 2, 21)
    with torch.no_grad():
        ours = model(ids)
        theirs = engine(ids)
    assert ours.dtype == torch.float32 and ours.shape == (2, 21, config.vocab_size)
    assert ours.abs().max() > 1.0  # a real comparison, not of near-zero logits
    torch.testing.assert_close(ours, theirs, atol=TOL, rtol=0)


def test_packed_documents_give_the_logits_of_each_document_run_alone() -> None:
    config = _config()
    model = TrainableMoE(config, seed=0)
    _randomise(model, seed=2)
    first, second = _ids(config.vocab_size, 9, seed=3), _ids(config.vocab_size, 6, seed=4)
    pad = torch.zeros(3, dtype=torch.long)
    row = torch.cat((first, second, pad))[None]
    doc_ids = torch.tensor([[0] * 9 + [1] * 6 + [-1] * 3])
    positions = torch.cat((torch.arange(9), torch.arange(6), torch.arange(3)))[None]
    with torch.no_grad():
        packed = model(row, positions=positions, doc_ids=doc_ids)
        derived = model(row, doc_ids=doc_ids)  # positions restart per document by default
        alone_first = model(first[None])
        alone_second = model(second[None])
    torch.testing.assert_close(packed[:, :9], alone_first, atol=TOL, rtol=0)
    torch.testing.assert_close(packed[:, 9:15], alone_second, atol=TOL, rtol=0)
    assert torch.isfinite(packed).all()  # padding rows included
    torch.testing.assert_close(derived, packed, atol=0, rtol=0)


def test_optimizer_steps_lower_the_loss_and_gradients_reach_every_used_parameter() -> None:
    model = TrainableMoE(_small(), seed=0)
    ids = _ids(97, 4, 32, seed=5)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(6):
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 97), ids[:, 1:].reshape(-1))
        loss.backward()
        if step == 0:
            used = {
                f"model.layers.{layer}.mlp.experts.{e}."
                for layer, block in zip((1, 2), model.router_loads(), strict=True)
                for e in range(8)
                if block[e] > 0
            }
            for name, p in model.named_parameters():
                assert p.requires_grad, name
                expert = name.rsplit(".", 2)[0] + "."
                if ".experts." in name and expert not in used:
                    assert p.grad is None, name
                else:
                    assert p.grad is not None and p.grad.abs().sum() > 0, name
            assert len(used) > 2
            for name, buf in model.named_buffers():
                assert not buf.requires_grad and buf.grad is None, name
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses


def test_update_router_bias_favours_under_loaded_experts() -> None:
    model = TrainableMoE(_small(), seed=0)
    with torch.no_grad():
        model(_ids(97, 2, 40, seed=6))
    loads = model.router_loads()
    before = [b.gate.e_score_correction_bias.clone() for b in model.moe_blocks]
    model.update_router_bias(0.01)
    for load, old, block in zip(loads, before, model.moe_blocks, strict=True):
        assert int(load.sum()) == 2 * 40 * 2  # tokens x top-k
        moved = block.gate.e_score_correction_bias - old
        under, over = load < load.float().mean(), load > load.float().mean()
        assert under.any() and over.any()
        torch.testing.assert_close(moved[under], torch.full_like(moved[under], 0.01))
        torch.testing.assert_close(moved[over], torch.full_like(moved[over], -0.01))
    # Saved under the HF key, as the engine reads it.
    saved = model.hf_state_dict()["model.layers.1.mlp.gate.e_score_correction_bias"]
    assert torch.equal(saved, model.moe_blocks[0].gate.e_score_correction_bias) and saved.any()


def test_router_loads_leave_out_padding() -> None:
    model = TrainableMoE(_small(), seed=0)
    _randomise(model, seed=7)
    ids = _ids(97, 1, 20, seed=8)
    with torch.no_grad():
        model(ids[:, :14])
        alone = model.router_loads()
        doc_ids = torch.tensor([[0] * 14 + [-1] * 6])
        model(ids, doc_ids=doc_ids)
        padded = model.router_loads()
    for a, p in zip(alone, padded, strict=True):
        assert int(p.sum()) == 14 * 2
        assert torch.equal(a, p)


def test_same_seed_gives_identical_weights_and_the_documented_init() -> None:
    config = _small()
    a, b, c = TrainableMoE(config, seed=3), TrainableMoE(config, seed=3), TrainableMoE(config)
    sa, sb, sc = a.hf_state_dict(), b.hf_state_dict(), c.hf_state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["lm_head.weight"], sc["lm_head.weight"])
    assert torch.equal(sa["model.norm.weight"], torch.ones(64))
    assert not sa["model.layers.2.mlp.gate.e_score_correction_bias"].any()
    residual = sa["model.layers.0.self_attn.o_proj.weight"]
    assert abs(residual.std().item() - 0.02 / 6**0.5) < 0.002
    assert abs(sa["model.embed_tokens.weight"].std().item() - 0.02) < 0.002


def test_saved_checkpoint_has_the_engine_keys_and_loads_in_bf16(tmp_path: Path) -> None:
    config = _small(q_lora_rank=None)
    model = TrainableMoE(config, seed=0)
    expected = MoEForCausalLM(config, init="meta").hf_parameter_shapes()
    state = model.hf_state_dict(torch.bfloat16)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert all(v.is_contiguous() for v in state.values())
    assert state["lm_head.weight"].dtype == torch.bfloat16
    assert state["model.layers.1.mlp.gate.e_score_correction_bias"].dtype == torch.float32
    assert model.parameter_count() == config.parameter_count()
    assert model.active_parameters_per_token() == config.active_parameters_per_token()

    root = model.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((root / "config.json").read_text())
    assert saved["torch_dtype"] == saved["dtype"] == "bfloat16"
    engine = load_checkpoint(root, progress=False)
    assert engine.hf_parameter_shapes() == expected
    assert MoEConfig.from_hf(root) == MoEConfig.from_hf(saved)
    ids = _ids(97, 1, 12, seed=9)
    with torch.no_grad():
        # bf16 weights against fp32 ones: close, not equal.
        torch.testing.assert_close(engine(ids), model(ids), atol=2e-2, rtol=0)


def test_configs_it_cannot_train_are_refused() -> None:
    config = _small(quantization_config={"quant_method": "fp8", "weight_block_size": [128, 128]})
    with pytest.raises(ValueError, match="quantization_config"):
        TrainableMoE(config)
