"""Low-precision expert weights kept low-precision in memory: FP8 blocks, INT8 and INT4 weight-only.

Each class here is an :class:`~.experts.ExpertLinear`: it stores one ``[out, in]`` projection in its
format, multiplies activations by it (``mm``: ``x @ W.T``) and gives back the exact real weight
(``dequantize``, fp32), the reference path every kernel is tested against.

* :class:`Fp8BlockLinear`: e4m3 with one fp32 ``scale_inv`` per ``[128, 128]`` block, the layout
  DeepSeek-V3 and Kimi K2 release. torch has no usable FP8 matmul on CPU (``torch._scaled_mm`` runs,
  ~90x slower than an fp32 GEMV here), so ``mm`` dequantises the weight into one reused per-thread
  fp32 buffer and multiplies by that: only the used experts are widened, one at a time.
* :class:`Int8Linear`: symmetric int8 with one scale per output channel, computed by
  ``torch._weight_int8pack_mm`` where ``in`` is a multiple of 8 (its bf16 variant crashes or is
  wrong otherwise), by the reference path elsewhere.
* :class:`Int4Linear`: symmetric int4 (``q`` in [-8, 7]) with one scale per group of ``group_size``
  input columns (32 by default, as Kimi K2 Thinking ships; 64 and 128 too), computed by
  ``torch._weight_int4pack_mm_for_cpu`` where it accepts the shape (out % 16 == 0, in % group == 0,
  group in 32/64/128/256, CPU); elsewhere the weight is kept as plain nibbles and ``mm`` runs the
  reference path. The kernel computes ``(u - 8) * scale + zero`` on unsigned nibbles ``u = q + 8``,
  exactly the symmetric format with zero 0.

On CPU the INT8 and INT4 kernels are fast only with bf16 activations (their fp32 variants are 10-15x
slower on an AVX2 host), so they always run in bf16: an fp32 model's activations are rounded to
bf16 for these two projections (a 2^-9 relative error, well below the weights' own quantisation
error). Quantisers round scales up to bf16-representable values, so the kernels' bf16 scales are
exact. :func:`quantize_experts` converts a loaded model's routed experts (and optionally its shared
experts) to a format.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

from . import cpu_kernels
from .cpu_kernels import INT4_GROUP, fp8_xwt, int4_pack, int4_xwt
from .experts import ExpertLinear, ExpertPair, ResidentExpertBank
from .fp8 import (
    DEFAULT_BLOCK_SIZE,
    dequantize_fp8_blockwise,
    dequantize_fp8_blockwise_into,
    has_nan_codes,
    quantize_fp8_blockwise,
    scale_grid_shape,
)

if TYPE_CHECKING:
    from .transformer import MoEForCausalLM

__all__ = [
    "INT4_KERNEL_GROUP_SIZES",
    "ExpertFormat",
    "Fp8BlockLinear",
    "Int4Linear",
    "Int8Linear",
    "StackedRows",
    "bf16_scale_up",
    "quantize_experts",
    "quantize_linear",
]

ExpertFormat = Literal["fp8", "int8", "int4"]

INT4_KERNEL_GROUP_SIZES: tuple[int, ...] = (32, 64, 128, 256)
"""Group sizes ``torch._weight_int4pack_mm_for_cpu`` accepts."""

_local = threading.local()


def _scratch(numel: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A flat buffer of at least ``numel`` elements, one per thread, device and dtype."""
    spaces: dict[tuple[torch.device, torch.dtype], torch.Tensor] = _local.__dict__.setdefault(
        "spaces", {}
    )
    buf = spaces.get((device, dtype))
    if buf is None or buf.numel() < numel:
        with torch.inference_mode(False):
            buf = torch.empty(numel, dtype=dtype, device=device)
        spaces[(device, dtype)] = buf
    return buf[:numel]


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` in ``x.dtype`` with an fp32 ``weight`` (bf16 activations are widened:
    cheaper and more exact than rounding the weight to bf16)."""
    if x.dtype == weight.dtype:
        return F.linear(x, weight)
    return F.linear(x.to(weight.dtype), weight).to(x.dtype)


def bf16_scale_up(scale: torch.Tensor) -> torch.Tensor:
    """Each (positive) fp32 scale rounded up to the nearest bf16 value, returned in fp32: scaled
    values stay within the integer range and the kernels' bf16 scales are exact."""
    s = scale.to(torch.float32)
    down = s.to(torch.bfloat16).to(torch.float32)
    bits = down.view(torch.int32)
    up = torch.where(down < s, (bits + 0x10000).view(torch.float32), down)
    return torch.where(up > 0, up, torch.ones_like(up))


# --------------------------------------------------------------------------------------------------
# FP8 e4m3 blocks


class Fp8BlockLinear:
    """An e4m3 weight ``[out, in]`` with a ``weight_scale_inv`` grid (one fp32 scale per block)."""

    def __init__(
        self,
        weight: torch.Tensor,
        scale_inv: torch.Tensor,
        block_size: Sequence[int] = DEFAULT_BLOCK_SIZE,
    ) -> None:
        if weight.dtype != torch.float8_e4m3fn or weight.dim() != 2:
            raise ValueError(f"an FP8 weight is 2-D float8_e4m3fn, got {weight.dtype}")
        self.block = (int(block_size[0]), int(block_size[1]))
        grid = scale_grid_shape(tuple(weight.shape), self.block)
        if tuple(scale_inv.shape) != grid:
            raise ValueError(
                f"weight_scale_inv has shape {list(scale_inv.shape)}; a weight of shape "
                f"{list(weight.shape)} with blocks {list(self.block)} needs {list(grid)}"
            )
        self.weight = weight.contiguous()
        self.scale_inv = scale_inv.to(torch.float32).contiguous()
        self.out_features, self.in_features = (int(d) for d in weight.shape)
        self._padded = grid[0] * self.block[0] * grid[1] * self.block[1]
        self._finite = not has_nan_codes(self.weight)
        self._codes = self.weight.view(torch.uint8)

    @classmethod
    def quantize(
        cls, weight: torch.Tensor, block_size: Sequence[int] = DEFAULT_BLOCK_SIZE
    ) -> Fp8BlockLinear:
        """Round-to-nearest e4m3 with each block's absolute maximum mapped to 448."""
        q, scale_inv = quantize_fp8_blockwise(weight, block_size)
        return cls(q, scale_inv, block_size)

    def mm(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1 and self._finite:
            # One row (decode): the native kernel reads the e4m3 bytes directly (1 byte per
            # weight, no widened copy); None where it does not apply.
            y = fp8_xwt(x, self._codes, self.scale_inv, self.block)
            if y is not None:
                return y
        device = self.weight.device
        space = _scratch(self._padded, device)
        bits = _scratch(self.weight.numel(), device, torch.int16) if self._finite else None
        w = dequantize_fp8_blockwise_into(self.weight, self.scale_inv, self.block, space, bits)
        return _linear(x, w)

    def dequantize(self) -> torch.Tensor:
        return dequantize_fp8_blockwise(self.weight, self.scale_inv, self.block)

    @property
    def nbytes(self) -> int:
        return self.weight.numel() + self.scale_inv.numel() * 4


# --------------------------------------------------------------------------------------------------
# INT8 per output channel


class Int8Linear:
    """Symmetric int8 ``[out, in]`` with one scale per output row (``w = q * scale``)."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor) -> None:
        if qweight.dtype != torch.int8 or qweight.dim() != 2:
            raise ValueError(f"an INT8 weight is 2-D int8, got {qweight.dtype}")
        if tuple(scale.shape) != (qweight.shape[0],):
            raise ValueError(
                f"INT8 scales must have shape [{qweight.shape[0]}], got {list(scale.shape)}"
            )
        self.qweight = qweight.contiguous()
        self.out_features, self.in_features = (int(d) for d in qweight.shape)
        self.scale = scale.to(torch.float32).contiguous()
        self._scale_bf16 = self.scale.to(torch.bfloat16)
        # The bf16 kernel crashes or returns garbage when ``in`` is not a multiple of 8 (torch
        # 2.13, AVX2); such shapes take the reference path.
        self.kernel = (
            qweight.device.type == "cpu"
            and self.in_features % 8 == 0
            and torch.equal(self._scale_bf16.to(torch.float32), self.scale)
        )

    @classmethod
    def quantize(cls, weight: torch.Tensor) -> Int8Linear:
        """Round-to-nearest with ``scale = max|row| / 127`` (rounded up to bf16)."""
        w = weight.to(torch.float32)
        scale = bf16_scale_up(w.abs().amax(dim=1) / 127.0)
        q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        return cls(q, scale)

    def mm(self, x: torch.Tensor) -> torch.Tensor:
        if not self.kernel:
            return _linear(x, self.dequantize())
        xb = x if x.dtype == torch.bfloat16 else x.to(torch.bfloat16)
        y = torch._weight_int8pack_mm(xb, self.qweight, self._scale_bf16)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def dequantize(self) -> torch.Tensor:
        return self.qweight.to(torch.float32).mul_(self.scale[:, None])

    @property
    def nbytes(self) -> int:
        return self.qweight.numel() + self._scale_bf16.numel() * 2


# --------------------------------------------------------------------------------------------------
# INT4 group-wise


@functools.lru_cache(maxsize=4)
def _int4_kernel_order(rows: int, cols: int) -> torch.Tensor:
    """For the CPU kernel's packed layout of a ``[rows, cols]`` weight: the flat source index of
    every stored nibble (low nibble first). Found by packing index patterns with the conversion
    op itself (five passes of 4 bits), so the reference path reads the kernel's own layout."""
    index = torch.arange(rows * cols, dtype=torch.int64).view(rows, cols)
    order = torch.zeros(rows * cols, dtype=torch.int64)
    for shift in range(0, max(4, (rows * cols - 1).bit_length()), 4):
        digits = index.bitwise_right_shift(shift).bitwise_and_(15).to(torch.int32)
        packed = torch._convert_weight_to_int4pack_for_cpu(digits, 1)
        nibbles = torch.stack((packed & 15, packed >> 4), dim=-1).reshape(-1).to(torch.int64)
        order |= nibbles << shift
    return order


def _pack_nibbles(u: torch.Tensor) -> torch.Tensor:
    """Unsigned nibbles ``[N, K]`` (0..15) -> bytes ``[N, ceil(K/2)]``, element 2j in the low
    nibble (the byte order of compressed-tensors' little-endian int32 words)."""
    if u.shape[1] % 2:
        u = F.pad(u, (0, 1), value=8)
    u8 = u.to(torch.uint8)
    return (u8[:, 0::2] | (u8[:, 1::2] << 4)).contiguous()


def _unpack_nibbles(packed: torch.Tensor, cols: int) -> torch.Tensor:
    """Inverse of :func:`_pack_nibbles`: ``[N, cols]`` uint8 nibbles."""
    both = torch.stack((packed & 15, packed >> 4), dim=-1)
    return both.view(packed.shape[0], -1)[:, :cols]


class Int4Linear:
    """Symmetric int4 ``[out, in]`` (``q`` in [-8, 7]) with one scale per row and group of
    ``group_size`` columns (the last group partial when ``in`` is not a multiple): ``w = q * s``."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, group_size: int = 32) -> None:
        if q.dim() != 2 or q.dtype not in (torch.int8, torch.int16, torch.int32):
            raise ValueError(f"INT4 values are a 2-D integer tensor, got {q.dtype}")
        if group_size <= 0:
            raise ValueError(f"group_size must be positive, got {group_size}")
        n, k = (int(d) for d in q.shape)
        groups = math.ceil(k / group_size)
        if tuple(scale.shape) != (n, groups):
            raise ValueError(
                f"INT4 scales for a [{n}, {k}] weight in groups of {group_size} must have shape "
                f"[{n}, {groups}], got {list(scale.shape)}"
            )
        if bool(((q < -8) | (q > 7)).any()):
            raise ValueError("INT4 values must lie in [-8, 7]")
        self.out_features, self.in_features = n, k
        self.group_size = group_size
        self._native: tuple[torch.Tensor, torch.Tensor] | None = None
        self.scale_dtype = scale.dtype if scale.dtype == torch.bfloat16 else torch.float32
        u = q.to(torch.int32) + 8
        self.kernel = (
            q.device.type == "cpu"
            and n % 16 == 0
            and k % group_size == 0
            and group_size in INT4_KERNEL_GROUP_SIZES
            and torch.equal(scale.to(torch.bfloat16).to(torch.float32), scale.to(torch.float32))
        )
        if self.kernel:
            self.packed = torch._convert_weight_to_int4pack_for_cpu(u, 1)
            # [groups, N, 2]: scale then zero (0: symmetric), bf16 like the activations.
            sz = torch.zeros(groups, n, 2, dtype=torch.bfloat16, device=q.device)
            sz[:, :, 0] = scale.t()
            self.scales_and_zeros = sz
            self.scale = sz[:, :, 0].t()
        else:
            self.packed = _pack_nibbles(u)
            self.scale = scale.to(self.scale_dtype).contiguous()
        if group_size == INT4_GROUP and q.device.type == "cpu" and cpu_kernels.enabled():
            # Built here, not on first use: converting later costs ~ms per expert mid-decode.
            self._native = (int4_pack(q), self.scale.float().contiguous())

    @classmethod
    def quantize(cls, weight: torch.Tensor, group_size: int = 32) -> Int4Linear:
        """Round-to-nearest with ``scale = max|group| / 7`` (rounded up to bf16), clamped to [-8, 7]."""
        w = weight.to(torch.float32)
        n, k = w.shape
        groups = math.ceil(k / group_size)
        padded = F.pad(w, (0, groups * group_size - k)).view(n, groups, group_size)
        scale = bf16_scale_up(padded.abs().amax(dim=2) / 7.0)
        q = torch.round(padded / scale[:, :, None]).clamp_(-8, 7).view(n, -1)[:, :k]
        return cls(q.to(torch.int8), scale, group_size)

    def int_values(self) -> torch.Tensor:
        """The signed values ``q`` ([out, in], int8)."""
        n, k = self.out_features, self.in_features
        if self.kernel:
            nibbles = torch.stack((self.packed & 15, self.packed >> 4), dim=-1).reshape(-1)
            u = torch.empty(n * k, dtype=torch.uint8)
            u[_int4_kernel_order(n, k)] = nibbles
            u = u.view(n, k)
        else:
            u = _unpack_nibbles(self.packed, k)
        return u.to(torch.int8) - 8

    def group_scales(self) -> torch.Tensor:
        """The scales ``[out, groups]`` as stored (bf16 or fp32)."""
        return self.scale

    def native_layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight in :func:`.cpu_kernels.int4_pack`'s layout and its fp32 ``[out, groups]``
        scales (group size 32 only), kept beside the packed layout (built with the weight where
        the native kernels are on, else on first use): the one-row (decode) kernel reads it,
        torch's kernel (more rows) the packed layout."""
        native: tuple[torch.Tensor, torch.Tensor] | None = getattr(self, "_native", None)
        if native is None:  # (instances built field by field, e.g. by offload_store, lack it)
            if self.group_size != INT4_GROUP:
                raise ValueError(f"the native INT4 layout has groups of {INT4_GROUP}")
            native = (int4_pack(self.int_values()), self.scale.float().contiguous())
            self._native = native
        return native

    def mm(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1 and self.group_size == INT4_GROUP and x.is_cpu and cpu_kernels.enabled():
            packed, scale = self.native_layout()
            y = int4_xwt(x, packed, scale, self.in_features)
            if y is not None:
                return y
        if not self.kernel:
            return _linear(x, self.dequantize())
        xb = x if x.dtype == torch.bfloat16 else x.to(torch.bfloat16)
        y = torch._weight_int4pack_mm_for_cpu(
            xb, self.packed, self.group_size, self.scales_and_zeros
        )
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def dequantize(self) -> torch.Tensor:
        q = self.int_values().to(torch.float32)
        s = self.scale.to(torch.float32).repeat_interleave(self.group_size, dim=1)
        return q.mul_(s[:, : self.in_features])

    @property
    def nbytes(self) -> int:
        size = self.packed.numel() * self.packed.element_size()
        if self.kernel:
            return size + self.scales_and_zeros.numel() * 2
        return size + self.scale.numel() * self.scale.element_size()


# --------------------------------------------------------------------------------------------------
# Composition and conversion


class StackedRows:
    """Several projections of the same input stacked along the output (gate rows then up rows),
    for formats whose blocks cannot be concatenated (FP8 when a part's rows are not a multiple
    of the block height)."""

    def __init__(self, parts: Sequence[ExpertLinear]) -> None:
        if not parts or len({p.in_features for p in parts}) != 1:
            raise ValueError("stacked projections need at least one part and one input width")
        self.parts = list(parts)
        self.in_features = parts[0].in_features
        self.out_features = sum(p.out_features for p in parts)

    def mm(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p.mm(x) for p in self.parts], dim=1)

    def dequantize(self) -> torch.Tensor:
        return torch.cat([p.dequantize() for p in self.parts], dim=0)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts)


def quantize_linear(
    weight: torch.Tensor, fmt: ExpertFormat, *, group_size: int = 32
) -> ExpertLinear:
    """One ``[out, in]`` float weight in ``fmt`` (round to nearest)."""
    if fmt == "fp8":
        return Fp8BlockLinear.quantize(weight)
    if fmt == "int8":
        return Int8Linear.quantize(weight)
    if fmt == "int4":
        return Int4Linear.quantize(weight, group_size)
    raise ValueError(f"unknown expert format {fmt!r}; use 'fp8', 'int8' or 'int4'")


def _gate_up(
    gate: torch.Tensor, up: torch.Tensor, fmt: ExpertFormat, group_size: int
) -> ExpertLinear:
    if fmt == "fp8" and gate.shape[0] % DEFAULT_BLOCK_SIZE[0]:
        return StackedRows([Fp8BlockLinear.quantize(gate), Fp8BlockLinear.quantize(up)])
    return quantize_linear(torch.cat([gate, up], dim=0), fmt, group_size=group_size)


def quantize_experts(
    model: MoEForCausalLM,
    fmt: ExpertFormat,
    *,
    group_size: int = 32,
    shared: bool = False,
) -> MoEForCausalLM:
    """Convert every MoE layer's routed experts of a loaded model to ``fmt`` (kept in that format
    in memory; the dense stacked copies are freed). ``shared=True`` converts the shared experts
    too. Returns the model."""
    from .moe import MoEBlock

    if fmt not in ("fp8", "int8", "int4"):
        raise ValueError(f"unknown expert format {fmt!r}; use 'fp8', 'int8' or 'int4'")
    # Read through the checkpoint-layout views ([out, in] per projection): the contract that holds
    # whatever layout the blocks store their dense weights in.
    views = dict(model.hf_state_items())
    for i, layer in enumerate(model.layers):
        module = getattr(layer, "mlp", None)
        if not isinstance(module, MoEBlock):
            continue
        p = f"model.layers.{i}.mlp."
        pairs: list[ExpertPair] = []
        for e in range(module.n_experts):
            if module.bank is not None:
                gu, down = (w.dequantize() for w in module.bank.fetch([e], torch.empty(0))[0])
                gate, up = gu[: module.inter], gu[module.inter :]
            else:
                ep = f"{p}experts.{e}."
                gate, up, down = (
                    views[ep + n + "_proj.weight"].float() for n in ("gate", "up", "down")
                )
            pairs.append(
                (
                    _gate_up(gate, up, fmt, group_size),
                    quantize_linear(down, fmt, group_size=group_size),
                )
            )
        shared_pair: ExpertPair | None = None
        if shared and module.shared is not None:
            sp = p + "shared_experts."
            gate, up, down = (
                views[sp + n + "_proj.weight"].float() for n in ("gate", "up", "down")
            )
            shared_pair = (
                _gate_up(gate, up, fmt, group_size),
                quantize_linear(down, fmt, group_size=group_size),
            )
        module.set_bank(ResidentExpertBank(pairs), shared=shared_pair)
    model.refresh()
    return model
