"""Routed experts offloaded: served from the memory-mapped checkpoint or RAM, with a budget of
resident experts and a prefetcher; logits bit-equal to the same model with every expert resident.

Every checkpoint here is written by the test itself (``save_checkpoint`` of a random model, or
safetensors files built by hand for the broken ones).
"""

from __future__ import annotations

import json
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from model_support import small_moe_config
from safetensors.torch import load_file, save_file

from agent_runtime.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from agent_runtime.model.config import MoEConfig
from agent_runtime.model.decode_step import fused_decode
from agent_runtime.model.experts import ResidentExpertBank
from agent_runtime.model.moe import MoEBlock
from agent_runtime.model.offload import (
    MappedSafetensors,
    OffloadConfig,
    OffloadedExpertBank,
    OffloadError,
    expert_offload,
    load_offloaded,
)
from agent_runtime.model.offload_store import write_expert_store
from agent_runtime.model.quant import Int4Linear, quantize_experts
from agent_runtime.model.transformer import MoEForCausalLM

# 4 layers (1 dense, 3 MoE), 8 experts top-3: a budget of 2 is smaller than one layer's needs.
CFG = small_moe_config(first_k_dense_replace=1)
TOP_K = CFG["num_experts_per_tok"]


def _write(
    root: Path, *, seed: int = 0, dtype: torch.dtype | None = torch.bfloat16, **kw: Any
) -> Path:
    model = MoEForCausalLM(MoEConfig.from_hf({**CFG, **kw}), seed=seed)
    with torch.no_grad():  # a router bias that matters, so selection differs from scores alone
        for layer in model.layers:
            if isinstance(layer.mlp, MoEBlock):
                layer.mlp.gate_bias.normal_(
                    0.0, 0.05, generator=torch.Generator().manual_seed(seed)
                )
    return save_checkpoint(model, root, dtype=dtype, max_shard_bytes=200_000)


def _resident(root: Path, dtype: torch.dtype = torch.float32) -> MoEForCausalLM:
    """The reference: every expert resident, through the same bank path of the MoE block."""
    model = load_checkpoint(root, dtype=dtype, progress=False)
    for layer in model.layers:
        if isinstance(layer.mlp, MoEBlock):
            layer.mlp.set_bank(ResidentExpertBank.from_stacked(layer.mlp.w13, layer.mlp.w2))
    return model


def _run(model: MoEForCausalLM, prompt: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """Prefill logits, then ``steps`` greedy decode logits (one token per forward), layer by
    layer: offloaded banks never take the fused decode step (decode_step.py), so the resident
    models they are compared with bit for bit must not either."""
    cache = model.new_cache(prompt.shape[0], capacity=prompt.shape[1] + steps)
    with fused_decode(False):
        out = [model(prompt, cache)]
        tok = out[-1][:, -1:].argmax(-1)
        for _ in range(steps):
            out.append(model(tok, cache))
            tok = out[-1][:, -1:].argmax(-1)
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("offload") / "ckpt")


PROMPT = torch.randint(2, CFG["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize(
    "config",
    [
        OffloadConfig(),
        OffloadConfig(max_experts=2, policy="lru", prefetch=True),
        OffloadConfig(max_experts=2, policy="lfu", prefetch=False),
        OffloadConfig(max_experts=5, policy="lfu", prefetch=True, release_pages=False),
        OffloadConfig(max_bytes=40_000, source="ram", prefetch=True),
        OffloadConfig(max_experts=0, prefetch=True),
    ],
    ids=["unbounded", "lru2-prefetch", "lfu2", "lfu5-prefetch", "ram-bytes", "zero"],
)
def test_logits_are_bit_equal_to_resident_experts(checkpoint: Path, config: OffloadConfig) -> None:
    want = _run(_resident(checkpoint), PROMPT, steps=4)
    one = _run(_resident(checkpoint), PROMPT[:1], steps=4)
    model = load_offloaded(checkpoint, config)
    got = _run(model, PROMPT, steps=4)
    got_one = _run(model, PROMPT[:1], steps=4)  # batch 1: the one-token bank path
    for a, b in zip(got + got_one, want + one, strict=True):
        assert torch.equal(a, b)
    stats = expert_offload(model).stats()
    assert stats.cache.misses > 0
    if config.max_experts is not None:
        assert stats.resident_experts <= config.max_experts
    if config.max_bytes is not None:
        assert 0 < stats.resident_bytes <= config.max_bytes
    expert_offload(model).close()


def test_bf16_model_matches_resident_bf16(checkpoint: Path) -> None:
    want = _run(_resident(checkpoint, torch.bfloat16), PROMPT, steps=3)
    model = load_offloaded(checkpoint, OffloadConfig(max_experts=3), dtype=torch.bfloat16)
    got = _run(model, PROMPT, steps=3)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_load_checkpoint_offload_option_matches_the_default_resident_model(
    checkpoint: Path,
) -> None:
    """Through ``load_checkpoint(offload=...)``: bit-equal to the resident bank path, and equal
    within fp32 rounding to the default model (stacked experts, the dense fast paths)."""
    default = _run(load_checkpoint(checkpoint, progress=False), PROMPT, steps=3)
    model = load_checkpoint(checkpoint, offload=OffloadConfig(max_experts=2, prefetch=True))
    got = _run(model, PROMPT, steps=3)
    want = _run(_resident(checkpoint), PROMPT, steps=3)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    for a, b in zip(got, default, strict=True):
        scale = b.abs().max().item()
        assert (a - b).abs().max().item() <= 1e-5 * scale
    assert expert_offload(model).stats().resident_experts <= 2
    expert_offload(model).close()


def test_group_limited_routing_and_fp32_checkpoint(tmp_path: Path) -> None:
    root = _write(tmp_path / "g", seed=5, dtype=None, n_group=2, topk_group=1)
    want = _run(_resident(root), PROMPT, steps=3)
    got = _run(load_offloaded(root, OffloadConfig(max_experts=4)), PROMPT, steps=3)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_int4_store_serves_experts_equal_to_the_model_converted_in_memory(tmp_path: Path) -> None:
    # INT4 kernel shapes: rows % 16 == 0 and columns % 32 == 0 for gate_up [64, 64], down [64, 32].
    root = _write(tmp_path / "c", seed=2, moe_intermediate_size=32)
    store = write_expert_store(root, tmp_path / "store")
    resident = quantize_experts(load_checkpoint(root, progress=False), "int4")
    want = _run(resident, PROMPT, steps=3)
    model = load_offloaded(root, OffloadConfig(experts_dir=store, max_experts=2))
    got = _run(model, PROMPT, steps=3)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    s = expert_offload(model).stats()
    h, inter = CFG["hidden_size"], 32
    per_expert = 3 * h * inter // 2 + 3 * h * inter // 32 * 2  # nibbles + one bf16 scale per 32
    assert s.cache.bytes_loaded == (s.demand_loads + s.cache.prefetch_loads) * per_expert
    bank = _banks(model)[0]
    block = resident.layers[bank.layer].mlp
    assert isinstance(block, MoEBlock) and block.bank is not None
    x = torch.randn(1, h)
    for (gu, down), (rgu, rdown) in zip(
        bank.fetch([1, 7], x), block.bank.fetch([1, 7], x), strict=True
    ):
        assert isinstance(gu, Int4Linear) and gu.kernel
        assert torch.equal(gu.dequantize(), rgu.dequantize())
        assert torch.equal(down.dequantize(), rdown.dequantize())


def _pack_words(q: torch.Tensor) -> torch.Tensor:
    """Signed int4 values [N, K] -> compressed-tensors int32 words (value i in bits 4 (i % 8))."""
    u = (q.to(torch.int64) + 8).view(q.shape[0], -1, 8)
    words = (u << (4 * torch.arange(8))).sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def _as_pack_quantized(root: Path, group: int = 32) -> Path:
    """Rewrite the routed experts of a checkpoint as compressed-tensors pack-quantized INT4."""
    index = json.loads((root / "model.safetensors.index.json").read_text())
    for shard in sorted(set(index["weight_map"].values())):
        tensors = load_file(str(root / shard))
        for key in [k for k in tensors if ".mlp.experts." in k]:
            q = Int4Linear.quantize(tensors[key].float(), group)
            base = key[: -len(".weight")]
            del tensors[key]
            tensors[base + ".weight_packed"] = _pack_words(q.int_values())
            tensors[base + ".weight_scale"] = q.group_scales().to(torch.bfloat16).contiguous()
            tensors[base + ".weight_shape"] = torch.tensor([q.out_features, q.in_features])
            for suffix in ("_packed", "_scale", "_shape"):
                index["weight_map"][base + ".weight" + suffix] = shard
            del index["weight_map"][key]
        save_file(tensors, str(root / shard))
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    config = json.loads((root / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {
                    "num_bits": 4,
                    "type": "int",
                    "symmetric": True,
                    "strategy": "group",
                    "group_size": group,
                },
            }
        },
    }
    (root / "config.json").write_text(json.dumps(config))
    return root


def test_compressed_tensors_int4_experts_offloaded_equal_the_resident_int4_model(
    tmp_path: Path,
) -> None:
    root = _as_pack_quantized(_write(tmp_path / "ct", seed=4, moe_intermediate_size=32))
    resident = load_checkpoint(root, progress=False)  # experts kept INT4 (compressed-tensors)
    want = _run(resident, PROMPT, steps=3)
    model = load_offloaded(root, OffloadConfig(max_experts=2))
    assert isinstance(_banks(model)[0].fmt.name, str) and _banks(model)[0].fmt.name.startswith(
        "int4"
    )
    got = _run(model, PROMPT, steps=3)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    # The store written from it serves the same experts, with no conversion per miss.
    store = write_expert_store(root, tmp_path / "store")
    from_store = load_offloaded(root, OffloadConfig(experts_dir=store, max_experts=2))
    assert _banks(from_store)[0].fmt.name == "int4-packed"
    got = _run(from_store, PROMPT, steps=3)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_fp8_experts_offloaded_equal_the_resident_fp8_model(tmp_path: Path) -> None:
    model = MoEForCausalLM(MoEConfig.from_hf({**CFG, "moe_intermediate_size": 32}), seed=6)
    root = save_checkpoint(
        model, tmp_path / "fp8", fp8_block_size=(16, 16), max_shard_bytes=200_000
    )
    resident = load_checkpoint(root, progress=False, experts="fp8")
    want = _run(resident, PROMPT, steps=3)
    offloaded = load_offloaded(root, OffloadConfig(max_experts=2))
    assert _banks(offloaded)[0].fmt.name == "fp8"
    got = _run(offloaded, PROMPT, steps=3)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    s = expert_offload(offloaded).stats()
    h, inter = CFG["hidden_size"], 32
    per_expert = 3 * h * inter + 3 * (h // 16) * (inter // 16) * 4  # e4m3 + fp32 block scales
    assert s.cache.bytes_loaded == (s.demand_loads + s.cache.prefetch_loads) * per_expert


def test_bytes_loaded_are_the_experts_stored_bytes(checkpoint: Path) -> None:
    model = load_offloaded(checkpoint, OffloadConfig(prefetch=False))
    offload = expert_offload(model)
    _run(model, PROMPT[:1], steps=2)
    s = offload.stats()
    h, inter = CFG["hidden_size"], CFG["moe_intermediate_size"]
    per_expert = 3 * h * inter * 2  # bf16 in the checkpoint
    assert s.cache.bytes_loaded == s.demand_loads * per_expert
    assert s.cache.prefetch_loads == 0
    # Unbounded budget: each expert was read once, and all of them stay resident (fp32 copies).
    assert s.demand_loads == s.resident_experts == s.cache.misses
    assert s.resident_bytes == s.resident_experts * 3 * h * inter * 4
    banks = [layer.mlp.bank for layer in model.layers if isinstance(layer.mlp, MoEBlock)]
    assert sum(b.resident_bytes for b in banks if b is not None) == s.resident_bytes


def _banks(model: MoEForCausalLM) -> list[OffloadedExpertBank]:
    out = []
    for layer in model.layers:
        if isinstance(layer.mlp, MoEBlock):
            assert isinstance(layer.mlp.bank, OffloadedExpertBank)
            out.append(layer.mlp.bank)
    return out


def test_prefetch_loads_the_next_layers_predicted_experts(checkpoint: Path) -> None:
    model = load_offloaded(checkpoint, OffloadConfig(max_experts=TOP_K))
    offload = expert_offload(model)
    first, second = _banks(model)[:2]
    x = torch.randn(1, CFG["hidden_size"], generator=torch.Generator().manual_seed(0))
    predicted = second.predict(x)
    assert len(predicted) == TOP_K
    first.fetch([0, 1, 2], x)
    offload.wait_prefetch()
    s = offload.stats()
    assert s.cache.prefetch_loads == TOP_K and s.demand_loads == 3
    # The budget holds one layer's worth: the prediction displaced the first layer's experts.
    assert sorted(k for _, k in offload.cache.keys()) == sorted(predicted)  # type: ignore[misc]
    pairs = second.fetch(predicted, x)
    s = offload.stats()
    assert s.cache.prefetch_hits == TOP_K and s.demand_loads == 3
    resident = _resident(checkpoint).layers[second.layer].mlp
    assert isinstance(resident, MoEBlock) and resident.bank is not None
    for (gu, down), (rgu, rdown) in zip(pairs, resident.bank.fetch(predicted, x), strict=True):
        assert torch.equal(gu.dequantize(), rgu.dequantize())
        assert torch.equal(down.dequantize(), rdown.dequantize())


def test_prediction_for_many_tokens_is_the_most_picked_experts(checkpoint: Path) -> None:
    model = load_offloaded(checkpoint, OffloadConfig(prefetch_max=2))
    bank = _banks(model)[1]
    x = torch.randn(6, CFG["hidden_size"], generator=torch.Generator().manual_seed(1))
    block = model.layers[bank.layer].mlp
    assert isinstance(block, MoEBlock)
    _, idx = block._route(x)
    counts = torch.bincount(idx.reshape(-1), minlength=block.n_experts)
    got = bank.predict(x)
    assert len(got) == 2
    assert sorted(counts[got].tolist()) == sorted(counts.tolist())[-2:]


def test_a_prediction_its_layer_already_passed_is_dropped(checkpoint: Path) -> None:
    model = load_offloaded(checkpoint, OffloadConfig())
    offload = expert_offload(model)
    last = _banks(model)[-1]  # no next layer: its fetch predicts nothing itself
    x = torch.randn(1, CFG["hidden_size"])
    gate = threading.Event()
    offload.prefetch(last, [])  # start the worker
    assert offload._executor is not None
    offload._executor.submit(gate.wait)  # hold the worker while the layer runs
    offload.prefetch(last, last.predict(x))
    last.fetch([4, 5], x)  # the layer runs before the prediction is served
    gate.set()
    offload.wait_prefetch()
    s = offload.stats()
    assert s.prefetch_stale == 1 and s.cache.prefetch_loads == 0 and s.demand_loads == 2


def test_a_demand_for_an_expert_being_prefetched_waits_instead_of_reading_again(
    checkpoint: Path,
) -> None:
    model = load_offloaded(checkpoint, OffloadConfig())
    offload = expert_offload(model)
    bank = _banks(model)[0]
    entered, release = threading.Event(), threading.Event()
    real = offload._read

    def slow_read(b: OffloadedExpertBank, e: int) -> Any:
        entered.set()
        release.wait()
        return real(b, e)

    offload._read = slow_read  # type: ignore[method-assign]
    offload.prefetch(bank, [6])
    assert entered.wait(5)
    result: list[Any] = []
    waiter = threading.Thread(target=lambda: result.append(offload.get(bank, 6)))
    waiter.start()
    while offload.stats().prefetch_late == 0:
        waiter.join(0.01)
    release.set()
    waiter.join()
    offload.wait_prefetch()
    s = offload.stats()
    assert s.prefetch_late == 1 and s.demand_loads == 0 and s.cache.prefetch_loads == 1
    assert s.cache.prefetch_hits == 0  # the demand waited for it: a late prediction, not a hit
    assert result[0] is offload.cache.peek((bank.layer, 6))


def test_mapped_views_equal_safetensors_reads_without_copying(tmp_path: Path) -> None:
    tensors = {
        "a": torch.randn(5, 7, dtype=torch.bfloat16),
        "b": torch.randint(-(2**31), 2**31 - 1, (3, 4), dtype=torch.int32),
        "c": torch.randn(16, 16).to(torch.float8_e4m3fn),
        "d": torch.randn(2, 3, dtype=torch.float64),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    ckpt = MappedSafetensors(tmp_path)
    loaded = load_file(str(tmp_path / "model.safetensors"))
    for key, value in loaded.items():
        view = ckpt.view(key)
        assert view.dtype == value.dtype and view.shape == value.shape
        assert torch.equal(view.view(torch.uint8), value.view(torch.uint8))
        assert ckpt.nbytes(key) == value.numel() * value.element_size()
    # Views of one file point into one mapping: their addresses differ by the data offsets.
    header_len = struct.unpack("<Q", (tmp_path / "model.safetensors").read_bytes()[:8])[0]
    header = json.loads((tmp_path / "model.safetensors").read_bytes()[8 : 8 + header_len])
    a, b = ckpt.view("a"), ckpt.view("b")
    delta = header["b"]["data_offsets"][0] - header["a"]["data_offsets"][0]
    assert b.data_ptr() - a.data_ptr() == delta
    ckpt.release(["a", "b"])  # dropped pages are read again from the file
    assert torch.equal(ckpt.view("a"), loaded["a"])
    ckpt.drop_page_cache()
    assert torch.equal(ckpt.view("b"), loaded["b"])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: struct.pack("<Q", 10**9) + raw[8:], "header length"),
        (lambda raw: raw[:8] + b"!" + raw[9:], "not JSON"),
        (lambda raw: raw[:-4], "does not fit"),
        (lambda raw: raw[:4], "too short"),
    ],
    ids=["length", "json", "truncated", "short"],
)
def test_corrupt_safetensors_files_are_clear_errors(
    tmp_path: Path, mutate: Any, message: str
) -> None:
    save_file({"w": torch.ones(4, 4)}, str(tmp_path / "model.safetensors"))
    path = tmp_path / "model.safetensors"
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(OffloadError, match=message):
        MappedSafetensors(tmp_path)


def test_missing_expert_tensors_are_named(tmp_path: Path) -> None:
    root = _write(tmp_path / "c", dtype=None)
    index = json.loads((root / "model.safetensors.index.json").read_text())
    victim = "model.layers.2.mlp.experts.5.up_proj.weight"
    shard = root / index["weight_map"].pop(victim)
    tensors = load_file(str(shard))
    del tensors[victim]
    save_file(tensors, str(shard))
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(OffloadError, match=r"layer 2 \(e\.g\. " + victim.replace(".", r"\.")):
        load_offloaded(root)


def test_a_non_expert_tensor_of_the_wrong_shape_is_a_checkpoint_error(tmp_path: Path) -> None:
    root = _write(tmp_path / "s", dtype=None)
    index = json.loads((root / "model.safetensors.index.json").read_text())
    key = "model.layers.1.mlp.gate.weight"
    shard = root / index["weight_map"][key]
    tensors = load_file(str(shard))
    tensors[key] = torch.zeros(3, 3)
    gone = "model.layers.1.input_layernorm.weight"
    if gone in tensors:
        del tensors[gone]
    else:  # in another shard
        other = root / index["weight_map"][gone]
        rest = load_file(str(other))
        del rest[gone]
        save_file(rest, str(other))
    del index["weight_map"][gone]
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    save_file(tensors, str(shard))
    with pytest.raises(CheckpointError, match="expected shape") as caught:
        load_offloaded(root)
    # Both problems are reported together, found before anything was read.
    assert any(key in p and "expected shape" in p for p in caught.value.problems)
    assert any(p.startswith(f"missing tensor {gone}") for p in caught.value.problems)


def test_a_model_without_offload_has_no_offload_handle(checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="not offloaded"):
        expert_offload(load_checkpoint(checkpoint, progress=False))


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="source"):
        OffloadConfig(source="gpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="policy"):
        OffloadConfig(policy="mru")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_experts"):
        OffloadConfig(max_experts=-1)
