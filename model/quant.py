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
  input columns (32 by default, as Kimi K2 Thinking ships; 64 and 128 too), held in exactly one
  layout (:data:`Int4Layout`). On CPU with the native kernels enabled and groups of 32, that is
  :mod:`.cpu_kernels`' layout: up to four rows run its kernel row by row, more rows (prefill)
  dequantise the weight into a reused buffer and run one GEMM. Otherwise it is computed by
  ``torch._weight_int4pack_mm_for_cpu`` where that accepts the shape (out % 16 == 0, in % group ==
  0, group in 32/64/128/256, CPU), which computes ``(u - 8) * scale + zero`` on unsigned nibbles
  ``u = q + 8`` (the symmetric format with zero 0); elsewhere the weight is kept as plain nibbles
  and ``mm`` runs the reference path.

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


Int4Layout = Literal["native", "torch", "nibbles"]
"""How an :class:`Int4Linear` holds its nibbles (exactly one of them):

* ``"native"``: :func:`.cpu_kernels.int4_pack`'s layout (groups of 32 only) with ``[out, groups]``
  scales (bf16 where exact, else fp32), read by the native one-row kernel; held on CPU whenever the
  native kernels are enabled and the group size is 32.
* ``"torch"``: ``torch._weight_int4pack_mm_for_cpu``'s packed layout with its ``[groups, out, 2]``
  bf16 scales and zeros, where torch accepts the shape and group.
* ``"nibbles"``: plain nibbles two per byte (:func:`_pack_nibbles`), computed by the reference
  path (other shapes, group sizes, devices)."""

_FEW_ROWS = 4
"""Up to this many rows, a natively held INT4 weight is multiplied row by row by the native
kernel; more rows (prefill) dequantise it once into a reused buffer and run one GEMM."""


def _bf16_exact(scale: torch.Tensor) -> bool:
    return scale.dtype == torch.bfloat16 or torch.equal(
        scale.to(torch.bfloat16).to(torch.float32), scale.to(torch.float32)
    )


def _torch_kernel_fits(n: int, k: int, group_size: int, device: torch.device) -> bool:
    return (
        device.type == "cpu" and n % 16 == 0 and k % group_size == 0
    ) and group_size in INT4_KERNEL_GROUP_SIZES


def _native_unpack(packed: torch.Tensor) -> torch.Tensor:
    """The native layout ``[out, groups * 16]`` -> unsigned nibbles ``[out, groups, 32]``."""
    n, width = packed.shape
    p = packed.view(n, width // 16, 1, 16)
    return torch.cat((p & 15, p >> 4), dim=2).view(n, width // 16, INT4_GROUP)


class Int4Linear:
    """Symmetric int4 ``[out, in]`` (``q`` in [-8, 7]) with one scale per row and group of
    ``group_size`` columns (the last group partial when ``in`` is not a multiple): ``w = q * s``.
    The weight is held in one :data:`Int4Layout` (``layout``), chosen when it is built."""

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
        self._init_fields(n, k, group_size, scale)
        layout = self._choose(q.device)
        if layout == "native":
            self._hold(layout, int4_pack(q), scale)
        elif layout == "torch":
            self._hold_torch(
                torch._convert_weight_to_int4pack_for_cpu(q.to(torch.int32) + 8, 1), scale
            )
        else:
            self._hold(layout, _pack_nibbles(q.to(torch.int32) + 8), scale)

    # -- construction from stored layouts

    def _init_fields(self, n: int, k: int, group_size: int, scale: torch.Tensor) -> None:
        self.out_features, self.in_features = n, k
        self.group_size = group_size
        self.scale_dtype = torch.bfloat16 if _bf16_exact(scale) else torch.float32

    def _choose(self, device: torch.device) -> Int4Layout:
        """The one layout held: see :data:`Int4Layout`."""
        if self.group_size == INT4_GROUP and device.type == "cpu" and cpu_kernels.enabled():
            return "native"
        n, k = self.out_features, self.in_features
        if self.scale_dtype == torch.bfloat16 and _torch_kernel_fits(n, k, self.group_size, device):
            return "torch"
        return "nibbles"

    def _hold(self, layout: Int4Layout, packed: torch.Tensor, scale: torch.Tensor) -> None:
        self.layout: Int4Layout = layout
        self.packed = packed.contiguous()
        self.scale = scale.to(self.scale_dtype).contiguous()
        # Whether a kernel multiplies the weight as held (else the reference path dequantises).
        self.kernel = layout != "nibbles"

    def _hold_torch(self, packed: torch.Tensor, scale: torch.Tensor) -> None:
        groups, n = int(scale.shape[1]), int(scale.shape[0])
        # [groups, N, 2]: scale then zero (0: symmetric), bf16 like the activations.
        sz = torch.zeros(groups, n, 2, dtype=torch.bfloat16, device=packed.device)
        sz[:, :, 0].copy_(scale.t())
        self.scales_and_zeros = sz
        self._hold("torch", packed, scale)
        self.scale = sz[:, :, 0].t()  # a view into scales_and_zeros: no second copy

    @classmethod
    def from_layout(
        cls,
        layout: Int4Layout,
        packed: torch.Tensor,
        scale: torch.Tensor,
        shape: tuple[int, int],
        group_size: int,
    ) -> Int4Linear:
        """An INT4 weight of ``shape`` ``[out, in]`` from nibbles already in ``layout`` (uint8)
        and ``[out, groups]`` scales, without repacking where that layout is the one an instance
        built here holds (:data:`Int4Layout`); otherwise it is converted once, here."""
        n, k = (int(d) for d in shape)
        groups = math.ceil(k / group_size)
        if packed.dtype != torch.uint8 or tuple(scale.shape) != (n, groups):
            raise ValueError(
                f"an INT4 {layout} layout of a [{n}, {k}] weight in groups of {group_size} is "
                f"uint8 nibbles and [{n}, {groups}] scales, got {packed.dtype} and "
                f"{list(scale.shape)}"
            )
        if layout == "native" and group_size != INT4_GROUP:
            raise ValueError(f"the native INT4 layout has groups of {INT4_GROUP}")
        if layout == "torch" and not _torch_kernel_fits(n, k, group_size, packed.device):
            raise ValueError(f"torch's INT4 layout does not hold a [{n}, {k}] weight")
        lin = cls.__new__(cls)
        lin._init_fields(n, k, group_size, scale)
        # Held as given where that is the layout of choice; else read (int_values) and rebuilt.
        lin._hold(layout, packed, scale)
        if lin._choose(packed.device) != layout:
            return cls(lin.int_values(), scale, group_size)
        if layout == "torch":
            lin._hold_torch(packed, scale)
        return lin

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

    # -- reading

    def int_values(self) -> torch.Tensor:
        """The signed values ``q`` ([out, in], int8)."""
        n, k = self.out_features, self.in_features
        if self.layout == "native":
            u = _native_unpack(self.packed).view(n, -1)[:, :k]
        elif self.layout == "torch":
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

    def torch_layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight in ``torch._weight_int4pack_mm_for_cpu``'s packed layout (uint8) and its
        bf16 ``[out, groups]`` scales: the held tensors, or converted from the held layout (the
        expert store's format). ``ValueError`` where torch's kernel does not take the shape."""
        if self.layout == "torch":
            return self.packed, self.scale
        n, k = self.out_features, self.in_features
        if self.scale_dtype != torch.bfloat16 or not _torch_kernel_fits(
            n, k, self.group_size, self.packed.device
        ):
            raise ValueError(
                f"torch's INT4 kernel does not take a [{n}, {k}] weight in groups of "
                f"{self.group_size} (out % 16 == 0, in % group == 0 and bf16 scales needed)"
            )
        u = self.int_values().to(torch.int32) + 8
        return torch._convert_weight_to_int4pack_for_cpu(u, 1), self.scale.to(torch.bfloat16)

    # -- products

    def _dequantize_native_into(self) -> torch.Tensor:
        """The natively held weight widened into a reused per-thread fp32 buffer, ``[out,
        groups * 32]`` (padding columns are zero)."""
        n, width = self.packed.shape
        groups = width // 16
        space = _scratch(n * groups * INT4_GROUP, self.packed.device).view(n, groups, INT4_GROUP)
        space.copy_(_native_unpack(self.packed))
        space.sub_(8).mul_(self.scale.view(n, groups, 1))
        return space.view(n, groups * INT4_GROUP)

    def _mm_native(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0]
        if 0 < rows <= _FEW_ROWS:
            ys: list[torch.Tensor] = []
            for r in range(rows):
                y = int4_xwt(x[r : r + 1], self.packed, self.scale, self.in_features)
                if y is None:  # (kernels switched off since, or a strided row)
                    break
                ys.append(y)
            else:
                return ys[0] if rows == 1 else torch.cat(ys, dim=0)
        w = self._dequantize_native_into()
        pad = w.shape[1] - self.in_features
        return _linear(F.pad(x, (0, pad)) if pad else x, w)

    def mm(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "native":
            return self._mm_native(x)
        if self.layout == "nibbles":
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
        """Bytes held: the nibbles plus the scales (and torch's zeros) in the one layout kept."""
        size = self.packed.numel() * self.packed.element_size()
        if self.layout == "torch":
            return size + self.scales_and_zeros.numel() * self.scales_and_zeros.element_size()
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
