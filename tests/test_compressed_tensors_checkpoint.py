"""Kimi K2 Thinking's native INT4 checkpoints (compressed-tensors ``pack-quantized``, symmetric,
group 32, routed experts only) loaded with the experts kept INT4, checked against the
``compressed-tensors`` library itself: it packs the tensors the tests write, and its own
decompression is the oracle for our weights and for the model's logits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from compressed_tensors.compressors.pack_quantized import (
    PackedQuantizationCompressor,
    unpack_from_int32,
)
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from compressed_tensors.quantization.utils.helpers import calculate_qparams
from safetensors.torch import load_file, save_file

from agent_runtime.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from agent_runtime.model.compressed_tensors import unpack_int4
from agent_runtime.model.config import MoEConfig
from agent_runtime.model.moe import MoEBlock
from agent_runtime.model.presets import tiny_hf_config
from agent_runtime.model.quant import Int4Linear
from agent_runtime.model.transformer import MoEForCausalLM

# moe_intermediate 96: the down projection's 96 input columns are three groups of 32, and
# gate_up's 192 rows suit the CPU kernel (rows % 16 == 0).
CONFIG = tiny_hf_config(moe_intermediate_size=96, num_hidden_layers=3, n_routed_experts=8)


def _scheme(group_size: int) -> QuantizationScheme:
    args = QuantizationArgs(
        num_bits=4, type="int", symmetric=True, strategy="group", group_size=group_size
    )
    return QuantizationScheme(targets=["Linear"], weights=args)


def _quant_config(group_size: int) -> dict[str, Any]:
    """The ``quantization_config`` layout of Kimi K2 Thinking's config.json."""
    weights = _scheme(group_size).weights
    assert weights is not None
    return {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": weights.model_dump(mode="json"),
                "input_activations": None,
                "output_activations": None,
            }
        },
        "ignore": [
            "lm_head",
            "re:.*self_attn.*",
            "re:.*shared_experts.*",
            "re:.*mlp\\.(gate|up|down)_proj.*",
        ],
        "kv_cache_scheme": None,
    }


def _library_compress(weight: torch.Tensor, group_size: int) -> dict[str, torch.Tensor]:
    scheme = _scheme(group_size)
    assert scheme.weights is not None
    n, k = weight.shape
    groups = weight.view(n, k // group_size, group_size)
    scale, zero = calculate_qparams(groups.amin(-1), groups.amax(-1), scheme.weights)
    state = {"weight": weight, "weight_scale": scale, "weight_zero_point": zero}
    return {
        k: v
        for k, v in PackedQuantizationCompressor.compress(state, scheme).items()
        if v is not None
    }


def _library_decompress(parts: dict[str, torch.Tensor], group_size: int) -> torch.Tensor:
    out = PackedQuantizationCompressor.decompress(dict(parts), _scheme(group_size))["weight"]
    assert isinstance(out, torch.Tensor)
    return out


def _write(tmp: Path, group_size: int = 32, config_group: int | None = None) -> tuple[Path, Path]:
    """A K2-Thinking-layout checkpoint (bf16, routed experts packed INT4 by the library) and the
    same model with the library's decompressed bf16 expert weights (no quantisation)."""
    model = MoEForCausalLM(MoEConfig.from_hf(CONFIG), seed=3)
    bf16 = save_checkpoint(model, tmp / "bf16", dtype=torch.bfloat16)
    tensors = load_file(str(bf16 / "model.safetensors"))
    packed: dict[str, torch.Tensor] = {}
    decompressed: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if ".mlp.experts." in key:
            parts = _library_compress(value, group_size)
            base = key  # X.weight -> X.weight_packed, X.weight_scale, X.weight_shape
            packed.update({f"{base}{name[len('weight') :]}": t for name, t in parts.items()})
            decompressed[key] = _library_decompress(parts, group_size)
        else:
            packed[key] = value
            decompressed[key] = value
    config = json.loads((bf16 / "config.json").read_text())
    ct, ref = tmp / "int4", tmp / "decompressed"
    for folder, state in ((ct, packed), (ref, decompressed)):
        folder.mkdir()
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (ref / "config.json").write_text(json.dumps(config))
    config["quantization_config"] = _quant_config(config_group or group_size)
    (ct / "config.json").write_text(json.dumps(config))
    return ct, ref


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _write(tmp_path_factory.mktemp("ct"))


def _experts(model: MoEForCausalLM) -> list[tuple[int, MoEBlock]]:
    return [(i, y.mlp) for i, y in enumerate(model.layers) if isinstance(y.mlp, MoEBlock)]


def test_unpacking_equals_the_library_on_odd_widths() -> None:
    gen = torch.Generator().manual_seed(0)
    for cols in (8, 32, 37, 100, 257):
        q = torch.randint(-8, 8, (5, cols), generator=gen, dtype=torch.int8)
        from compressed_tensors.compressors.pack_quantized import pack_to_int32

        words = pack_to_int32(q, 4)
        assert torch.equal(
            unpack_int4(words, (5, cols)), unpack_from_int32(words, 4, torch.Size((5, cols)))
        )


def test_experts_stay_int4_and_dequantise_to_the_library_weights_exactly(
    folders: tuple[Path, Path],
) -> None:
    ct, _ = folders
    model = load_checkpoint(ct, dtype=torch.bfloat16, progress=False)
    files = load_file(str(ct / "model.safetensors"))
    for i, block in _experts(model):
        assert block.bank is not None and block.w13.is_meta
        for e, (gate_up, down) in enumerate(
            block.bank.fetch(range(block.n_experts), torch.empty(0))
        ):
            assert isinstance(gate_up, Int4Linear) and isinstance(down, Int4Linear)
            assert gate_up.kernel and down.kernel  # the CPU kernel runs these shapes
            ours = {
                "gate": gate_up.dequantize()[: block.inter],
                "up": gate_up.dequantize()[block.inter :],
                "down": down.dequantize(),
            }
            for name, weight in ours.items():
                base = f"model.layers.{i}.mlp.experts.{e}.{name}_proj.weight"
                parts = {
                    s: files[base + s[len("weight") :]]
                    for s in ("weight_packed", "weight_scale", "weight_shape")
                }
                oracle = _library_decompress(parts, 32)
                # ours is the exact product in fp32; the library's bf16 output is its rounding
                assert torch.equal(weight.to(oracle.dtype), oracle), base
                assert (weight - oracle.float()).abs().max() <= oracle.float().abs().max() * 2**-8
    # the non-expert weights are the bf16 tensors of the file
    views = dict(model.hf_state_items())
    key = "model.layers.1.self_attn.o_proj.weight"
    assert torch.equal(views[key].to(torch.bfloat16), files[key])


def _logits(model: MoEForCausalLM, prompt: torch.Tensor, steps: list[int]) -> torch.Tensor:
    cache = model.new_cache(1, capacity=prompt.shape[1] + len(steps))
    with torch.inference_mode():
        rows = [model(prompt, cache)[0]]
        rows += [model(torch.tensor([[t]]), cache)[0] for t in steps]
    return torch.cat(rows).float()


def test_logits_equal_a_model_of_the_library_decompressed_weights(
    folders: tuple[Path, Path],
) -> None:
    ct, ref = folders
    prompt = torch.randint(0, 1000, (1, 9), generator=torch.Generator().manual_seed(1))
    steps = [4, 77, 500]
    fp32_ref = _logits(load_checkpoint(ref, progress=False), prompt, steps)
    scale = float(fp32_ref.abs().max())
    # exact path: INT4 experts dequantised at load, fp32 model: only the library's bf16 rounding
    # of each expert weight (2^-9 relative) separates the two
    exact = _logits(load_checkpoint(ct, progress=False, experts="dense"), prompt, steps)
    assert float((exact - fp32_ref).abs().max()) / scale < 2e-3
    # INT4 kept and run by the kernel in a bf16 model, against the same weights dense in bf16:
    # no worse than the bf16 model's own error against fp32 (plus a margin for the rounding of
    # the library's weights)
    bf16_ref = _logits(load_checkpoint(ref, dtype=torch.bfloat16, progress=False), prompt, steps)
    int4 = _logits(load_checkpoint(ct, dtype=torch.bfloat16, progress=False), prompt, steps)
    bf16_err = float((bf16_ref - fp32_ref).abs().max()) / scale
    int4_err = float((int4 - fp32_ref).abs().max()) / scale
    assert float((int4 - bf16_ref).abs().max()) / scale < 2 * bf16_err + 1e-3
    assert int4_err < 2 * bf16_err + 1e-3
    # the same in an fp32 model (kernel on bf16-rounded activations)
    int4_fp32 = _logits(load_checkpoint(ct, progress=False), prompt, steps)
    assert float((int4_fp32 - fp32_ref).abs().max()) / scale < 2 * bf16_err + 1e-3


def _mutate(folder: Path, change: Any) -> None:
    state = load_file(str(folder / "model.safetensors"))
    change(state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


KEY = "model.layers.2.mlp.experts.5.down_proj.weight"


def test_a_missing_scale_is_a_clear_checkpoint_error(tmp_path: Path) -> None:
    ct, _ = _write(tmp_path)
    _mutate(ct, lambda s: s.pop(KEY + "_scale"))
    with pytest.raises(CheckpointError, match=f"{KEY}_packed has no {KEY}_scale"):
        load_checkpoint(ct, progress=False)


def test_bad_shapes_are_reported_together(tmp_path: Path) -> None:
    ct, _ = _write(tmp_path)

    def change(state: dict[str, torch.Tensor]) -> None:
        state[KEY + "_packed"] = state[KEY + "_packed"][:, :-1].contiguous()
        other = KEY.replace("down", "gate")
        state[other + "_shape"] = torch.tensor([96, 255])

    _mutate(ct, change)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ct, progress=False)
    problems = info.value.problems
    assert any(f"{KEY}_packed: expected shape [256, 12]" in p for p in problems)
    assert any("gate_proj.weight_shape says [96, 255]" in p for p in problems)


def test_a_group_size_the_scales_do_not_fit_is_reported(tmp_path: Path) -> None:
    ct, _ = _write(tmp_path, group_size=32, config_group=64)
    with pytest.raises(CheckpointError, match=r"expected shape \[256, 2\] \(groups of 64"):
        load_checkpoint(ct, progress=False)


def test_unsupported_schemes_name_the_field(tmp_path: Path) -> None:
    ct, _ = _write(tmp_path)
    config = json.loads((ct / "config.json").read_text())
    config["quantization_config"]["config_groups"]["group_0"]["weights"]["symmetric"] = False
    (ct / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="weights.symmetric is False"):
        load_checkpoint(ct, progress=False)
    config["quantization_config"]["config_groups"]["group_0"]["weights"]["symmetric"] = True
    (ct / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="experts='fp8' needs an FP8 checkpoint"):
        load_checkpoint(ct, progress=False, experts="fp8")
