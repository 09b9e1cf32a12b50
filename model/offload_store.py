"""An expert store for offloading: routed experts as INT4 in the CPU kernel's packed layout.

Offloaded experts are read on every cache miss, so what a miss costs beyond the read matters. A
checkpoint's own INT4 layout (compressed-tensors ``pack-quantized``: int32 words of 8 nibbles) and
dense or FP8 weights need converting into :class:`~.quant.Int4Linear`'s kernel layout
(``_convert_weight_to_int4pack_for_cpu``), ~0.5-1 s per K2-sized expert on one core here, 50-100x
the expert's matmul. :func:`write_expert_store` does that conversion once, expert by expert, and
writes the result as safetensors (``{prefix}gate_up.int4_packed`` uint8 ``[2I, H/2]`` in the
kernel's layout plus ``{prefix}gate_up.int4_scale`` bf16 ``[2I, H/group]``; the same for
``down``); a miss then costs one read of exactly the expert's INT4 bytes and scales, copied
straight into the kernel's buffers. Point :class:`~.offload.OffloadConfig`'s ``experts_dir`` at it.
Where the native CPU kernels are on (:mod:`.cpu_kernels`, groups of 32), :class:`~.quant.Int4Linear`
holds their layout instead, so each miss also regroups the nibbles (a reorder, no requantisation:
the values read are the values written).

:class:`SafetensorsWriter` streams a safetensors file tensor by tensor (the header first, from the
declared shapes), so a store of many gigabytes is written with one expert in memory.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import torch

from .experts import DenseExpertLinear, ExpertLinear, ExpertPair
from .quant import INT4_KERNEL_GROUP_SIZES, Int4Linear

__all__ = [
    "INDEX_NAME",
    "Int4PackedFormat",
    "SafetensorsWriter",
    "int4_store_entries",
    "write_expert_store",
]

INDEX_NAME = "model.safetensors.index.json"
_CODES = {
    torch.float32: "F32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.int32: "I32",
    torch.int64: "I64",
    torch.int8: "I8",
    torch.uint8: "U8",
}
_PARTS = ("gate_up", "down")


class SafetensorsWriter:
    """Writes one safetensors file whose tensors (``(key, dtype, shape)``, in file order) are
    declared up front; :meth:`write` then takes them one at a time, in that order."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        specs: Sequence[tuple[str, torch.dtype, tuple[int, ...]]],
    ) -> None:
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        self._order: list[tuple[str, int]] = []
        for key, dtype, shape in specs:
            numel = 1
            for d in shape:
                numel *= d
            size = numel * torch.empty(0, dtype=dtype).element_size()
            header[key] = {
                "dtype": _CODES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + size],
            }
            self._order.append((key, size))
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 (closed by close())
        self._file.write(struct.pack("<Q", len(raw)) + raw)
        self._next = 0

    def write(self, key: str, tensor: torch.Tensor) -> None:
        want, size = self._order[self._next]
        if key != want:
            raise ValueError(f"expected {want} next, got {key}")
        data = tensor.detach().contiguous().to("cpu").view(torch.uint8).reshape(-1)
        if data.numel() != size:
            raise ValueError(f"{key}: {data.numel()} bytes, declared {size}")
        data.numpy().tofile(self._file)
        self._next += 1

    def close(self) -> None:
        self._file.close()
        if self._next != len(self._order):
            raise ValueError(f"{len(self._order) - self._next} declared tensors were not written")

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def int4_store_entries(
    prefix: str, hidden: int, inter: int, group_size: int
) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """The store's tensors for the expert whose keys start with ``prefix``."""
    out: list[tuple[str, torch.dtype, tuple[int, ...]]] = []
    for part, (n, k) in zip(_PARTS, ((2 * inter, hidden), (hidden, inter)), strict=True):
        out.append((f"{prefix}{part}.int4_packed", torch.uint8, (n, k // 2)))
        out.append((f"{prefix}{part}.int4_scale", torch.bfloat16, (n, k // group_size)))
    return out


def _from_kernel_layout(packed: torch.Tensor, scale: torch.Tensor) -> Int4Linear:
    """An :class:`Int4Linear` from torch-kernel-layout nibbles and ``[out, groups]`` bf16 scales:
    held as read where torch's layout is the one kept, converted once to the native kernels' layout
    where those are on (groups of 32)."""
    n, half = (int(d) for d in packed.shape)
    k = 2 * half
    return Int4Linear.from_layout("torch", packed, scale, (n, k), k // int(scale.shape[1]))


class Int4PackedFormat:
    """Reads experts of a store written by :func:`write_expert_store` (see the module doc)."""

    name = "int4-packed"

    def keys(self, prefix: str) -> list[str]:
        return [f"{prefix}{part}.int4_{kind}" for part in _PARTS for kind in ("packed", "scale")]

    def build(
        self, raw: Mapping[str, torch.Tensor], prefix: str, dtype: torch.dtype, device: torch.device
    ) -> ExpertPair:
        if device.type != "cpu":
            raise ValueError("the packed INT4 expert store is the CPU kernel's layout; use CPU")
        lins = []
        for part in _PARTS:
            src = raw[f"{prefix}{part}.int4_packed"]
            packed = torch.empty(src.shape, dtype=torch.uint8)
            packed.copy_(src)
            lins.append(_from_kernel_layout(packed, raw[f"{prefix}{part}.int4_scale"]))
        return lins[0], lins[1]


def _torch_layout(lin: ExpertLinear, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The expert projection ``lin`` as INT4 in torch's kernel layout (the store's) and its bf16
    scales: exactly its values where it is INT4 in these groups, else quantised."""
    if not (isinstance(lin, Int4Linear) and lin.group_size == group_size):
        weight = lin.weight if isinstance(lin, DenseExpertLinear) else lin.dequantize()
        lin = Int4Linear.quantize(weight.float(), group_size)
    try:
        return lin.torch_layout()
    except ValueError as exc:
        raise ValueError(f"{exc}: it does not fit the INT4 expert store") from exc


def write_expert_store(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    group_size: int = 32,
) -> Path:
    """Write the routed experts of the checkpoint directory ``checkpoint`` into ``out_dir`` as an
    INT4 store (one file per MoE layer and an index). INT4 experts are copied exactly; dense or
    other formats are quantised round-to-nearest (as :func:`~.quant.quantize_experts` does, so a
    model served from the store equals the model converted in memory). Returns ``out_dir``."""
    from .offload import (
        MappedSafetensors,
        checkpoint_config,
        detect_expert_format,
        quantization_config,
    )

    if group_size not in INT4_KERNEL_GROUP_SIZES:
        raise ValueError(f"group_size must be one of {INT4_KERNEL_GROUP_SIZES}, got {group_size}")
    src = Path(checkpoint)
    config = checkpoint_config(src)
    quantization = quantization_config(src)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = MappedSafetensors(src)
    weight_map: dict[str, str] = {}
    h, inter = config.hidden_size, config.moe_intermediate_size
    cpu = torch.device("cpu")
    try:
        for layer in range(config.num_hidden_layers):
            if not config.is_moe_layer(layer):
                continue
            base = f"model.layers.{layer}.mlp.experts."
            fmt = detect_expert_format(ckpt, base + "0.", quantization)
            name = f"experts-{layer:05d}.safetensors"
            specs = [
                s
                for e in range(config.n_routed_experts)
                for s in int4_store_entries(f"{base}{e}.", h, inter, group_size)
            ]
            with SafetensorsWriter(out / name, specs) as writer:
                for e in range(config.n_routed_experts):
                    prefix = f"{base}{e}."
                    keys = fmt.keys(prefix)
                    pair = fmt.build({k: ckpt.view(k) for k in keys}, prefix, torch.float32, cpu)
                    ckpt.release(keys)
                    for part, lin in zip(_PARTS, pair, strict=True):
                        packed, scale = _torch_layout(lin, group_size)
                        writer.write(f"{prefix}{part}.int4_packed", packed)
                        writer.write(f"{prefix}{part}.int4_scale", scale)
                writer.close()
            weight_map.update(dict.fromkeys((s[0] for s in specs), name))
    finally:
        ckpt.close()
    index = {
        "metadata": {"format": "int4-packed", "group_size": group_size},
        "weight_map": weight_map,
    }
    (out / INDEX_NAME).write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    return out
