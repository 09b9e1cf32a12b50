"""The routed-expert bank path through MoEBlock (model/experts.py, model/quant.py): a model whose
experts are quantised and kept in their format computes what the dense path computes on the
dequantised weights, for one token (decode) and many (prefill), and frees the dense copies."""

from __future__ import annotations

import pytest
import torch

from agent_runtime.model.config import MoEConfig
from agent_runtime.model.experts import ResidentExpertBank
from agent_runtime.model.moe import MoEBlock
from agent_runtime.model.presets import tiny_hf_config
from agent_runtime.model.quant import quantize_experts
from agent_runtime.model.transformer import MoEForCausalLM

CONFIG = MoEConfig.from_hf(tiny_hf_config(n_group=4, topk_group=2))


def _blocks(model: MoEForCausalLM) -> list[tuple[int, MoEBlock]]:
    return [
        (i, layer.mlp) for i, layer in enumerate(model.layers) if isinstance(layer.mlp, MoEBlock)
    ]


def _dense_twin(quantised: MoEForCausalLM, dtype: torch.dtype) -> MoEForCausalLM:
    """The same model with every bank's dequantised weights loaded as ordinary dense weights."""
    twin = MoEForCausalLM(CONFIG, dtype=dtype, seed=1)
    for i, block in _blocks(quantised):
        assert block.bank is not None
        p = f"model.layers.{i}.mlp."
        for e, (gate_up, down) in enumerate(
            block.bank.fetch(range(block.n_experts), torch.empty(0))
        ):
            gu = gate_up.dequantize()
            twin.load_hf_tensor(f"{p}experts.{e}.gate_proj.weight", gu[: block.inter])
            twin.load_hf_tensor(f"{p}experts.{e}.up_proj.weight", gu[block.inter :])
            twin.load_hf_tensor(f"{p}experts.{e}.down_proj.weight", down.dequantize())
        if block.shared_pair is not None:
            gu = block.shared_pair[0].dequantize()
            half = gu.shape[0] // 2
            twin.load_hf_tensor(p + "shared_experts.gate_proj.weight", gu[:half])
            twin.load_hf_tensor(p + "shared_experts.up_proj.weight", gu[half:])
            twin.load_hf_tensor(
                p + "shared_experts.down_proj.weight", block.shared_pair[1].dequantize()
            )
    twin.refresh()
    return twin.eval()


def _run(model: MoEForCausalLM, prompt: torch.Tensor, steps: list[int]) -> torch.Tensor:
    """Prefill logits of every prompt position, then one-token decode steps (cache)."""
    cache = model.new_cache(1, capacity=prompt.shape[1] + len(steps))
    with torch.inference_mode():
        out = [model(prompt, cache)[0]]
        for token in steps:
            out.append(model(torch.tensor([[token]]), cache)[0])
    return torch.cat(out)


@pytest.mark.parametrize("fmt", ["fp8", "int8", "int4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shared", [False, True])
def test_bank_model_matches_dense_model_on_dequantised_weights(
    fmt: str, dtype: torch.dtype, shared: bool
) -> None:
    model = MoEForCausalLM(CONFIG, dtype=dtype, seed=1).eval()
    quantize_experts(model, fmt, shared=shared)  # type: ignore[arg-type]
    twin = _dense_twin(model, dtype)
    prompt = torch.randint(
        0, CONFIG.vocab_size, (1, 11), generator=torch.Generator().manual_seed(2)
    )
    got, want = _run(model, prompt, [5, 17, 900]), _run(twin, prompt, [5, 17, 900])
    scale = float(want.abs().max())
    err = float((got - want).abs().max()) / scale
    # fp32: FP8 is dequantised and multiplied in fp32 (summation order only); INT8/INT4 kernels run
    # on bf16 activations. bf16 models: both sides round activations to bf16 at every layer.
    limit = {"fp8": 1e-5, "int8": 2e-2, "int4": 2e-2}[fmt] if dtype == torch.float32 else 5e-2
    assert err < limit, (fmt, dtype, err)


def test_bank_frees_the_stacked_weights_and_reports_resident_bytes() -> None:
    model = MoEForCausalLM(CONFIG, seed=1).eval()
    quantize_experts(model, "int4", shared=True)
    for _, block in _blocks(model):
        assert block.w13.is_meta and block.w2.is_meta
        assert block.shared is not None and block.shared.w13.is_meta
        assert block.bank is not None
        dense_bytes = block.n_experts * 3 * CONFIG.hidden_size * block.inter * 4
        assert 0 < block.bank.resident_bytes < dense_bytes / 6
    # the checkpoint-layout shapes still answer (the views are shape-only)
    shapes = model.hf_parameter_shapes()
    assert shapes["model.layers.1.mlp.experts.3.gate_proj.weight"] == (
        block.inter,
        CONFIG.hidden_size,
    )


class _CountingBank(ResidentExpertBank):
    def __init__(self, base: ResidentExpertBank) -> None:
        super().__init__(base.experts)
        self.calls: list[list[int]] = []

    def fetch(self, ids, x):  # type: ignore[no-untyped-def]
        self.calls.append(list(ids))
        return super().fetch(ids, x)


@pytest.mark.parametrize("tokens", [1, 7])
def test_bank_is_fetched_once_per_forward_with_the_distinct_routed_ids(tokens: int) -> None:
    model = MoEForCausalLM(CONFIG, seed=1).eval()
    _, block = _blocks(model)[0]
    x = torch.randn(tokens, CONFIG.hidden_size, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        want = block(x)
        _, idx = block._route(x)
    base = ResidentExpertBank.from_stacked(block.w13.detach(), block.w2.detach())
    bank = _CountingBank(base)
    block.set_bank(bank)
    with torch.inference_mode():
        got = block(x)
    assert len(bank.calls) == 1
    assert sorted(bank.calls[0]) == sorted(set(idx.reshape(-1).tolist()))
    assert len(bank.calls[0]) == len(set(bank.calls[0]))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_bank_of_the_wrong_size_is_refused() -> None:
    model = MoEForCausalLM(CONFIG, seed=1)
    _, block = _blocks(model)[0]
    small = ResidentExpertBank.from_stacked(block.w13.detach()[:3], block.w2.detach()[:3])
    with pytest.raises(ValueError, match="3 experts"):
        block.set_bank(small)
