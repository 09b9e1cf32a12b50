"""Checkpoint loading and saving against transformers' DeepseekV3ForCausalLM, on tiny random models.

Every checkpoint here is written by the tests themselves: by transformers' ``save_pretrained``, by our
``save_checkpoint``, or by hand with safetensors (sharded indexes, broken checkpoints).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from model_support import random_reference
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from agent_runtime.errors import UserError
from agent_runtime.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from agent_runtime.model.presets import tiny_hf_config

transformers = pytest.importorskip("transformers")

TINY = tiny_hf_config(num_hidden_layers=3)


def _reference_model(seed: int, **overrides: Any) -> Any:
    """A transformers model with every weight random (norms near 1, a non-zero router bias)."""
    model = random_reference({**TINY, **overrides}, seed)
    model.set_experts_implementation("eager")
    model.set_attn_implementation("eager")
    return model.eval()


def _reference_logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits: torch.Tensor = model(ids, use_cache=False).logits
    return logits.float()


def _our_logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    logits = out.logits if hasattr(out, "logits") else out
    assert isinstance(logits, torch.Tensor)
    return logits.float()


def _state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.hf_state_items()}


def _ids(seed: int = 0, length: int = 12) -> torch.Tensor:
    return torch.randint(
        2, TINY["vocab_size"], (2, length), generator=torch.Generator().manual_seed(seed)
    )


def _write_config(directory: Path, config: dict[str, Any]) -> None:
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")


def _read_dir(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a single-file or sharded checkpoint directory."""
    out: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        out.update(load_file(str(file)))
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A random transformers model and the directory its save_pretrained wrote."""
    model = _reference_model(seed=1)
    directory = tmp_path_factory.mktemp("hf_saved")
    model.save_pretrained(directory)
    return model, directory


@pytest.fixture(scope="module")
def ours(reference: tuple[Any, Path]) -> Any:
    return load_checkpoint(reference[1], progress=False)


# ---------------------------------------------------------------- transformers <-> ours


def test_transformers_checkpoint_loads_with_identical_logits(
    reference: tuple[Any, Path], ours: Any
) -> None:
    ref_model, directory = reference
    assert (directory / "model.safetensors").is_file()
    ids = _ids()
    torch.testing.assert_close(
        _our_logits(ours, ids), _reference_logits(ref_model, ids), atol=1e-4, rtol=0
    )


def test_loaded_tensors_equal_the_files_tensors(reference: tuple[Any, Path], ours: Any) -> None:
    on_disk = _read_dir(reference[1])
    loaded = _state(ours)
    assert set(loaded) == set(on_disk)
    for key, tensor in on_disk.items():
        assert torch.equal(loaded[key], tensor), key


def test_our_checkpoint_loads_in_transformers_with_identical_logits(
    reference: tuple[Any, Path], ours: Any, tmp_path: Path
) -> None:
    save_checkpoint(ours, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["dtype"] == "float32"
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
    reloaded, info = transformers.DeepseekV3ForCausalLM.from_pretrained(
        tmp_path, dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    reloaded.set_experts_implementation("eager")
    reloaded.set_attn_implementation("eager")
    reloaded.eval()
    assert reloaded.config.rope_parameters["factor"] == 32.0
    ids = _ids(seed=5)
    expected = _reference_logits(reference[0], ids)
    torch.testing.assert_close(_reference_logits(reloaded, ids), expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- ours -> ours


def test_round_trip_is_exact(ours: Any, tmp_path: Path) -> None:
    save_checkpoint(ours, tmp_path)
    again = load_checkpoint(tmp_path, progress=False)
    before, after = _state(ours), _state(again)
    assert set(before) == set(after)
    for key in before:
        assert before[key].dtype == after[key].dtype, key
        assert torch.equal(before[key], after[key]), key
    ids = _ids(seed=2)
    assert torch.equal(_our_logits(again, ids), _our_logits(ours, ids))


def test_sharded_save_writes_index_and_loads_back(ours: Any, tmp_path: Path) -> None:
    save_checkpoint(ours, tmp_path, max_shard_bytes=400_000)
    shards = sorted(tmp_path.glob("model-*-of-*.safetensors"))
    assert len(shards) > 2
    assert not (tmp_path / "model.safetensors").exists()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    expected = _state(ours)
    assert set(index["weight_map"]) == set(expected)
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in expected.values()
    )
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            assert all(index["weight_map"][k] == shard.name for k in f.keys())
    again = load_checkpoint(tmp_path, progress=False)
    for key, tensor in _state(again).items():
        assert torch.equal(tensor, expected[key]), key
    # Saving a single file into the same directory replaces the shards instead of mixing layouts.
    save_checkpoint(ours, tmp_path)
    assert not list(tmp_path.glob("model-*-of-*.safetensors"))
    assert not (tmp_path / "model.safetensors.index.json").exists()


def test_transformers_sharded_checkpoint_loads(reference: tuple[Any, Path], tmp_path: Path) -> None:
    ref_model = reference[0]
    ref_model.save_pretrained(tmp_path, max_shard_size="300KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("*.safetensors"))) > 2
    model = load_checkpoint(tmp_path, progress=False)
    ids = _ids(seed=3)
    torch.testing.assert_close(
        _our_logits(model, ids), _reference_logits(ref_model, ids), atol=1e-4, rtol=0
    )


def test_bf16_load_casts_weights_and_keeps_router_fp32(
    reference: tuple[Any, Path], ours: Any
) -> None:
    model = load_checkpoint(reference[1], dtype=torch.bfloat16, progress=False)
    on_disk = _read_dir(reference[1])
    for key, tensor in model.hf_state_items():
        if ".mlp.gate." in key:
            assert tensor.dtype == torch.float32, key
            assert torch.equal(tensor, on_disk[key]), key
        else:
            assert tensor.dtype == torch.bfloat16, key
            assert torch.equal(tensor, on_disk[key].to(torch.bfloat16)), key
    ids = _ids(seed=4)
    full = _our_logits(ours, ids)
    half = _our_logits(model, ids)
    # bf16 rounding can flip a near-tied expert choice for a token, so compare on average.
    assert (half - full).abs().mean() < 0.05 * full.abs().mean()


def test_bf16_save_is_read_back_as_bf16_values(ours: Any, tmp_path: Path) -> None:
    save_checkpoint(ours, tmp_path, dtype=torch.bfloat16)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    stored = _read_dir(tmp_path)
    assert all(t.dtype == torch.bfloat16 for t in stored.values())
    again = load_checkpoint(tmp_path, dtype=torch.float32, progress=False)
    loaded = _state(again)
    for key, tensor in _state(ours).items():
        assert torch.equal(loaded[key], tensor.to(torch.bfloat16).float()), key


# ---------------------------------------------------------------- what is skipped, what is refused


def test_multi_token_prediction_layer_is_skipped_with_a_log(
    reference: tuple[Any, Path], ours: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tensors = _read_dir(reference[1])
    n = TINY["num_hidden_layers"]
    # DeepSeek-V3 and K2 carry one extra layer for multi-token prediction after the last real one.
    tensors[f"model.layers.{n}.eh_proj.weight"] = torch.randn(256, 512)
    tensors[f"model.layers.{n}.enorm.weight"] = torch.ones(256)
    tensors[f"model.layers.{n}.self_attn.q_a_proj.weight"] = torch.randn(64, 256)
    # Some exporters also write rotary tables, which are derived from the config.
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_bytes((reference[1] / "config.json").read_bytes())
    with caplog.at_level(logging.INFO, logger="agent_runtime.model.checkpoint"):
        model = load_checkpoint(tmp_path, progress=False)
    assert "skipping 4 checkpoint tensors" in caplog.text
    ids = _ids(seed=6)
    assert torch.equal(_our_logits(model, ids), _our_logits(ours, ids))


def test_missing_unexpected_and_misshaped_tensors_are_reported_together(
    reference: tuple[Any, Path], tmp_path: Path
) -> None:
    tensors = _read_dir(reference[1])
    del tensors["model.layers.2.mlp.experts.7.up_proj.weight"]
    tensors["model.layers.1.mlp.experts.99.up_proj.weight"] = torch.zeros(64, 256)
    tensors["model.layers.0.self_attn.kv_a_proj_with_mqa.weight"] = torch.zeros(47, 256)
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_bytes((reference[1] / "config.json").read_bytes())
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path, progress=False)
    error = caught.value
    assert isinstance(caught.value, UserError)
    assert len(error.problems) == 3
    message = str(error)
    assert (
        "missing tensor model.layers.2.mlp.experts.7.up_proj.weight: expected shape [64, 256]"
        in message
    )
    assert "unexpected tensor model.layers.1.mlp.experts.99.up_proj.weight [64, 256]" in message
    assert (
        "model.layers.0.self_attn.kv_a_proj_with_mqa.weight: expected shape [48, 256], found [47, 256]"
        in message
    )


def test_many_problems_are_listed_up_to_a_limit(
    reference: tuple[Any, Path], tmp_path: Path
) -> None:
    tensors = {k: v for k, v in _read_dir(reference[1]).items() if ".experts." not in k}
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_bytes((reference[1] / "config.json").read_bytes())
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path, progress=False)
    assert len(caught.value.problems) == 2 * 16 * 3
    assert "... and 76 more" in str(caught.value)


def test_index_pointing_at_a_missing_shard_is_refused(ours: Any, tmp_path: Path) -> None:
    save_checkpoint(ours, tmp_path, max_shard_bytes=400_000)
    victim = sorted(tmp_path.glob("model-*-of-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"missing shard file {victim.name}"):
        load_checkpoint(tmp_path, progress=False)


def test_directory_without_weights_or_config_is_refused(
    reference: tuple[Any, Path], tmp_path: Path
) -> None:
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path, progress=False)
    (tmp_path / "config.json").write_bytes((reference[1] / "config.json").read_bytes())
    with pytest.raises(CheckpointError, match="neither model.safetensors nor"):
        load_checkpoint(tmp_path, progress=False)


def test_unsupported_quantization_is_refused(reference: tuple[Any, Path], tmp_path: Path) -> None:
    config = json.loads((reference[1] / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    _write_config(tmp_path, config)
    (tmp_path / "model.safetensors").write_bytes((reference[1] / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="quant_method 'gptq' is not supported"):
        load_checkpoint(tmp_path, progress=False)


def test_progress_bar_is_shown_unless_disabled(
    reference: tuple[Any, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    load_checkpoint(reference[1], progress=True)
    assert "Loading checkpoint" in capsys.readouterr().err
    load_checkpoint(reference[1], progress=False)
    assert "Loading checkpoint" not in capsys.readouterr().err


def test_kimi_k2_model_type_loads_and_is_kept_on_save(ours: Any, tmp_path: Path) -> None:
    save_checkpoint(ours, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "kimi_k2"
    _write_config(tmp_path, config)
    model = load_checkpoint(tmp_path, progress=False)
    ids = _ids(seed=8)
    assert torch.equal(_our_logits(model, ids), _our_logits(ours, ids))
    out = tmp_path / "again"
    save_checkpoint(model, out)
    assert json.loads((out / "config.json").read_text())["model_type"] == "kimi_k2"
