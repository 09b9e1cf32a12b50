"""FP8 block-quantised checkpoints written by the tests, loaded by ours, checked two ways.

The model's dimensions are deliberately not multiples of 128 (``kv_a_proj_with_mqa`` has 576 rows
like Kimi K2's, ``q_b_proj`` 192, hidden 200), so partial edge blocks appear in most weights.
Loaded weights must equal a float64 block-by-block dequantisation exactly, and the loaded model must
match transformers' model run on those dequantised weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from model_support import random_reference, reference_dequant
from safetensors.torch import load_file, save_file

from agent_runtime.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from agent_runtime.model.fp8 import quantize_fp8_blockwise
from agent_runtime.model.presets import tiny_hf_config

transformers = pytest.importorskip("transformers")

ODD = tiny_hf_config(
    vocab_size=500,
    hidden_size=200,
    intermediate_size=300,
    moe_intermediate_size=72,
    num_hidden_layers=3,
    q_lora_rank=96,
    kv_lora_rank=560,
    n_routed_experts=8,
    num_experts_per_tok=2,
)


def _is_quantised(key: str, tensor: torch.Tensor) -> bool:
    """DeepSeek-V3's rule: linear weights are FP8; embeddings, lm_head, norms and the router are not."""
    return (
        tensor.dim() == 2
        and key.endswith(".weight")
        and "embed_tokens" not in key
        and not key.startswith("lm_head")
        and "norm" not in key
        and not key.endswith("mlp.gate.weight")
    )


def _reference_dequant(
    weight: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int]
) -> torch.Tensor:
    """The float64 block-by-block dequantisation, rounded to fp32 once (what a loader must give)."""
    return reference_dequant(weight, scale_inv, block).to(torch.float32)


def _write_fp8_checkpoint(
    source: dict[str, torch.Tensor], config: dict[str, Any], directory: Path, block: tuple[int, int]
) -> dict[str, torch.Tensor]:
    """Quantise ``source`` into ``directory`` (weights in one shard, scales in the other) and
    return the float64-reference dequantisation of every tensor (what a loader must produce)."""
    directory.mkdir(parents=True, exist_ok=True)
    weights: dict[str, torch.Tensor] = {}
    scales: dict[str, torch.Tensor] = {}
    expected: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        if _is_quantised(key, tensor):
            q, s = quantize_fp8_blockwise(tensor, block)
            weights[key], scales[key + "_scale_inv"] = q, s
            expected[key] = _reference_dequant(q, s, block)
        else:
            weights[key] = tensor
            expected[key] = tensor
    save_file(
        weights, str(directory / "model-00001-of-00002.safetensors"), metadata={"format": "pt"}
    )
    save_file(
        scales, str(directory / "model-00002-of-00002.safetensors"), metadata={"format": "pt"}
    )
    weight_map = dict.fromkeys(weights, "model-00001-of-00002.safetensors")
    weight_map.update(dict.fromkeys(scales, "model-00002-of-00002.safetensors"))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    config = dict(config)
    config["quantization_config"] = {
        "quant_method": "fp8",
        "fmt": "e4m3",
        "activation_scheme": "dynamic",
        "weight_block_size": list(block),
    }
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return expected


@pytest.fixture(scope="module")
def fp8_case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    reference = random_reference(ODD, seed=7, spread_rows=True)
    plain = tmp_path_factory.mktemp("plain")
    reference.save_pretrained(plain)
    source = load_file(str(plain / "model.safetensors"))
    assert tuple(source["model.layers.0.self_attn.kv_a_proj_with_mqa.weight"].shape) == (576, 200)
    assert tuple(source["model.layers.0.self_attn.q_b_proj.weight"].shape) == (192, 96)
    n = ODD["num_hidden_layers"]
    # The multi-token-prediction layer K2 ships: quantised too, and skipped by the loader.
    source[f"model.layers.{n}.eh_proj.weight"] = torch.randn(200, 400)
    source[f"model.layers.{n}.enorm.weight"] = torch.ones(200)
    config = json.loads((plain / "config.json").read_text())
    fp8_dir = tmp_path_factory.mktemp("fp8")
    expected = _write_fp8_checkpoint(source, config, fp8_dir, (128, 128))
    expected = {k: v for k, v in expected.items() if not k.startswith(f"model.layers.{n}.")}

    # The reference model gets the dequantised weights as an ordinary fp32 checkpoint.
    dequantised = tmp_path_factory.mktemp("dequantised")
    save_file(expected, str(dequantised / "model.safetensors"), metadata={"format": "pt"})
    (dequantised / "config.json").write_text(json.dumps(config), encoding="utf-8")
    ref_model = transformers.DeepseekV3ForCausalLM.from_pretrained(dequantised, dtype=torch.float32)
    ref_model.set_experts_implementation("eager")
    ref_model.set_attn_implementation("eager")
    return {
        "dir": fp8_dir,
        "expected": expected,
        "config": config,
        "source": source,
        "reference": ref_model.eval(),
    }


def test_fp8_weights_dequantise_exactly_like_float64_reference(fp8_case: dict[str, Any]) -> None:
    model = load_checkpoint(fp8_case["dir"], progress=False)
    expected = fp8_case["expected"]
    loaded = dict(model.hf_state_items())
    assert set(loaded) == set(expected)
    quantised = [k for k in expected if _is_quantised(k, expected[k])]
    assert "model.layers.0.self_attn.kv_a_proj_with_mqa.weight" in quantised
    assert len(quantised) > 40
    for key, tensor in expected.items():
        assert loaded[key].dtype == torch.float32, key
        assert torch.equal(loaded[key], tensor), key
    # Quantisation really happened: the loaded weights differ from the unquantised originals.
    key = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"
    assert not torch.equal(loaded[key], fp8_case["source"][key])


def test_fp8_model_matches_reference_on_dequantised_weights(fp8_case: dict[str, Any]) -> None:
    model = load_checkpoint(fp8_case["dir"], progress=False)
    ids = torch.randint(2, ODD["vocab_size"], (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = fp8_case["reference"](ids, use_cache=False).logits.float()
    torch.testing.assert_close(model(ids).float(), want, atol=1e-4, rtol=0)


def test_fp8_bf16_load_is_the_exact_dequantisation_rounded(fp8_case: dict[str, Any]) -> None:
    model = load_checkpoint(fp8_case["dir"], dtype=torch.bfloat16, progress=False)
    for key, tensor in model.hf_state_items():
        want = fp8_case["expected"][key]
        if tensor.dtype == torch.bfloat16:
            want = want.to(torch.bfloat16)
        assert torch.equal(tensor, want), key


def test_block_size_comes_from_quantization_config(
    fp8_case: dict[str, Any], tmp_path: Path
) -> None:
    source = {k: v for k, v in fp8_case["source"].items() if not k.startswith("model.layers.3.")}
    expected = _write_fp8_checkpoint(source, fp8_case["config"], tmp_path, (64, 48))
    model = load_checkpoint(tmp_path, progress=False)
    for key, tensor in model.hf_state_items():
        assert torch.equal(tensor, expected[key]), key


def test_mis_shaped_scale_and_missing_scale_are_reported(
    fp8_case: dict[str, Any], tmp_path: Path
) -> None:
    for name in ("config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors"):
        (tmp_path / name).write_bytes((fp8_case["dir"] / name).read_bytes())
    scales = load_file(str(fp8_case["dir"] / "model-00002-of-00002.safetensors"))
    bad = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv"
    dropped = "model.layers.1.self_attn.q_b_proj.weight_scale_inv"
    assert tuple(scales[bad].shape) == (5, 2)
    scales[bad] = torch.ones(4, 2)
    del scales[dropped]
    save_file(scales, str(tmp_path / "model-00002-of-00002.safetensors"))
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    del index["weight_map"][dropped]
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path, progress=False)
    message = str(caught.value)
    assert len(caught.value.problems) == 2
    assert f"{bad}: expected shape [5, 2]" in message and "found [4, 2]" in message
    assert (
        "model.layers.1.self_attn.q_b_proj.weight is stored as F8_E4M3 but has no "
        f"{dropped}" in message
    )


def test_fp8_save_writes_the_released_layout_and_loads_back(
    fp8_case: dict[str, Any], tmp_path: Path
) -> None:
    model = load_checkpoint(fp8_case["dir"], progress=False)
    save_checkpoint(model, tmp_path, fp8_block_size=(128, 128), dtype=torch.bfloat16)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["quantization_config"]["weight_block_size"] == [128, 128]
    assert config["dtype"] == "bfloat16"
    stored = load_file(str(tmp_path / "model.safetensors"))
    original = dict(model.hf_state_items())
    assert {k for k in stored if not k.endswith("_scale_inv")} == set(original)
    for key, tensor in original.items():
        if _is_quantised(key, tensor):
            assert stored[key].dtype == torch.float8_e4m3fn, key
            rows, cols = tensor.shape
            grid = (math.ceil(rows / 128), math.ceil(cols / 128))
            assert tuple(stored[key + "_scale_inv"].shape) == grid, key
        else:
            assert stored[key].dtype == torch.bfloat16, key
            assert key + "_scale_inv" not in stored
    again = load_checkpoint(tmp_path, progress=False)
    for key, tensor in again.hf_state_items():
        if _is_quantised(key, tensor):
            want = _reference_dequant(stored[key], stored[key + "_scale_inv"], (128, 128))
            assert torch.equal(tensor, want), key
            # Re-quantising weights that came from the same FP8 grid changes them very little.
            assert (tensor - original[key]).abs().max() <= original[key].abs().max() / 64, key
        else:
            assert torch.equal(tensor, original[key].to(torch.bfloat16).float()), key
