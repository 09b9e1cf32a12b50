"""Reading compressed-tensors ``pack-quantized`` INT4 weights, the format Kimi K2 Thinking ships.

Its ``config.json`` carries ``quantization_config`` with ``quant_method: compressed-tensors``,
``format: pack-quantized`` and one config group whose weights are symmetric ``int`` of 4 bits,
``strategy: group`` with a ``group_size`` (32 for K2 Thinking). Each quantised ``X.weight``
``[N, K]`` is replaced in the safetensors files by

* ``X.weight_packed``: int32 ``[N, ceil(K / 8)]``, eight values per word, value ``i`` of a row in
  bits ``4 (i % 8)`` of word ``i // 8``, each stored as ``q + 8`` (``q`` in [-8, 7]);
* ``X.weight_scale``: ``[N, ceil(K / group_size)]`` (bf16 in the released files), ``w = q * s``;
* ``X.weight_shape``: int ``[2]``, the original ``[N, K]``.

Only the routed experts are quantised in K2 Thinking; everything else is stored as bf16 weights.
This module parses the config, checks the three tensors' shapes and unpacks the words into the
signed values :class:`~.quant.Int4Linear` keeps; :mod:`.checkpoint` does the loading.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "PACKED_SUFFIX",
    "SCALE_SUFFIX",
    "SHAPE_SUFFIX",
    "PackQuantizedScheme",
    "check_packed_shapes",
    "dequantize_packed",
    "parse_pack_quantized",
    "unpack_int4",
]

PACKED_SUFFIX = "_packed"
SCALE_SUFFIX = "_scale"
SHAPE_SUFFIX = "_shape"
_BITS = 4
_PER_WORD = 32 // _BITS


@dataclass(frozen=True)
class PackQuantizedScheme:
    """What this loader supports of compressed-tensors: symmetric INT4, group-wise scales."""

    group_size: int
    num_bits: int = _BITS


def _weights_args(qc: Mapping[str, Any]) -> Mapping[str, Any]:
    groups = qc.get("config_groups")
    if not isinstance(groups, Mapping) or not groups:
        raise ValueError("quantization_config.config_groups is missing or empty")
    weights: list[Mapping[str, Any]] = []
    for name, group in groups.items():
        if not isinstance(group, Mapping) or not isinstance(group.get("weights"), Mapping):
            raise ValueError(f"quantization_config.config_groups.{name} has no weights scheme")
        if group.get("input_activations") is not None:
            raise ValueError(
                f"quantization_config.config_groups.{name} quantises activations; only "
                "weight-only schemes are supported"
            )
        fmt = group.get("format")
        if fmt is not None and fmt != "pack-quantized":
            raise ValueError(f"config group {name} has format {fmt!r}; only 'pack-quantized'")
        weights.append(group["weights"])
    if any(w != weights[0] for w in weights[1:]):
        raise ValueError("config groups with different weight schemes are not supported")
    return weights[0]


def parse_pack_quantized(qc: Mapping[str, Any]) -> PackQuantizedScheme:
    """The scheme of a ``compressed-tensors`` ``quantization_config``; ``ValueError`` naming the
    field for anything else than symmetric 4-bit integer groups in ``pack-quantized`` format."""
    if qc.get("quant_method") != "compressed-tensors":
        raise ValueError(f"quant_method {qc.get('quant_method')!r} is not 'compressed-tensors'")
    fmt = qc.get("format")
    if fmt != "pack-quantized":
        raise ValueError(
            f"quantization_config.format {fmt!r} is not supported; only 'pack-quantized'"
        )
    w = _weights_args(qc)
    expected: dict[str, Any] = {
        "num_bits": _BITS,
        "type": "int",
        "symmetric": True,
        "strategy": "group",
    }
    for field, value in expected.items():
        if w.get(field) != value:
            raise ValueError(
                f"quantization_config weights.{field} is {w.get(field)!r}; only {value!r} is supported"
            )
    if w.get("actorder") not in (None, False, "static"):
        raise ValueError(f"weights.actorder {w.get('actorder')!r} is not supported")
    group = w.get("group_size")
    if not isinstance(group, int) or isinstance(group, bool) or group <= 0:
        raise ValueError(
            f"quantization_config weights.group_size must be a positive integer, got {group!r}"
        )
    return PackQuantizedScheme(group_size=group)


def check_packed_shapes(
    key: str,
    weight_shape: Sequence[int],
    packed_shape: Sequence[int],
    packed_dtype: str,
    scale_shape: Sequence[int] | None,
    stored_shape: Sequence[int] | None,
    group_size: int,
) -> list[str]:
    """Problems with one packed weight (``key`` is the model's ``X.weight``): empty when its
    packed, scale and shape tensors fit a ``weight_shape`` weight in groups of ``group_size``."""
    base = key
    n, k = (int(d) for d in weight_shape)
    problems = []
    want_packed = [n, math.ceil(k / _PER_WORD)]
    if packed_dtype != "I32":
        problems.append(f"{base}{PACKED_SUFFIX} has dtype {packed_dtype}; int32 (I32) expected")
    if list(packed_shape) != want_packed:
        problems.append(
            f"{base}{PACKED_SUFFIX}: expected shape {want_packed} (8 int4 values per int32 of a "
            f"[{n}, {k}] weight), found {list(packed_shape)}"
        )
    if scale_shape is None:
        problems.append(f"{base}{PACKED_SUFFIX} has no {base}{SCALE_SUFFIX} beside it")
    else:
        want_scale = [n, math.ceil(k / group_size)]
        if list(scale_shape) != want_scale:
            problems.append(
                f"{base}{SCALE_SUFFIX}: expected shape {want_scale} (groups of {group_size} over "
                f"[{n}, {k}]), found {list(scale_shape)}"
            )
    if stored_shape is None:
        problems.append(f"{base}{PACKED_SUFFIX} has no {base}{SHAPE_SUFFIX} beside it")
    elif [int(d) for d in stored_shape] != [n, k]:
        problems.append(
            f"{base}{SHAPE_SUFFIX} says {[int(d) for d in stored_shape]}, the model expects {[n, k]}"
        )
    return problems


def unpack_int4(packed: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """int32 words ``[N, ceil(K / 8)]`` -> signed values ``[N, K]`` (int8, in [-8, 7])."""
    n, k = (int(d) for d in shape)
    data = packed.contiguous().view(torch.uint8).view(n, -1, 4)
    if sys.byteorder == "big":  # the format is defined on the words' values, not their bytes
        data = data.flip(-1)
    data = data.reshape(n, -1)
    both = torch.stack((data & 15, data >> 4), dim=-1).view(n, -1)[:, :k]
    return both.to(torch.int8) - 8


def dequantize_packed(
    packed: torch.Tensor, scale: torch.Tensor, shape: Sequence[int], group_size: int
) -> torch.Tensor:
    """The real ``[N, K]`` weight in fp32: ``q * scale`` of its group. Exact for bf16 scales (a
    4-bit integer times an 8-bit significand fits fp32's 24 bits); for fp32 scales it is the
    correctly rounded product."""
    q = unpack_int4(packed, shape).to(torch.float32)
    s = scale.to(torch.float32).repeat_interleave(group_size, dim=1)[:, : q.shape[1]]
    return q.mul_(s)
