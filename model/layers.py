"""Small building blocks shared by attention and the MLPs: RMSNorm and (YaRN) rotary embeddings.

The rotary tables are precomputed once per model for every position up to the longest context
used so far, so a decode step only indexes rows instead of evaluating cos/sin.
"""

from __future__ import annotations

import ctypes
import math
import sys
from typing import Any

import torch

from .config import MoEConfig

__all__ = [
    "RotaryTables",
    "Rotation",
    "advise_huge_pages",
    "apply_rotary",
    "empty_weight",
    "out_major",
    "projection_strides",
    "projection_weight",
    "rms_norm",
    "yarn_inv_freq",
]

_HUGE = 1 << 21  # 2 MiB transparent huge page
_MADV_HUGEPAGE = 14
_madvise: Any = None  # libc.madvise once looked up; False where unavailable


def advise_huge_pages(t: torch.Tensor) -> bool:
    """Ask Linux to back the 2 MiB-aligned interior of CPU tensor ``t`` with transparent huge
    pages (``madvise(MADV_HUGEPAGE)``); call it before the memory is first written.

    Decoding streams every active weight once per token from DRAM in ~1-3 MB pieces (one
    expert matrix each); with 4 KiB pages each piece costs hundreds of TLB misses and
    prefetcher restarts at page boundaries, and one thread then reads ~8% slower than a long
    stream does. A performance hint only: returns False (and changes nothing) where it does not
    apply (not Linux, not CPU, small tensors, madvise refused)."""
    global _madvise
    if t.device.type != "cpu" or sys.platform != "linux":
        return False
    nbytes = t.numel() * t.element_size()
    if nbytes < 2 * _HUGE:
        return False
    if _madvise is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.madvise
            fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            fn.restype = ctypes.c_int
            _madvise = fn
        except (OSError, AttributeError):
            _madvise = False
    if _madvise is False:
        return False
    ptr = t.data_ptr()
    start = (ptr + _HUGE - 1) & ~(_HUGE - 1)
    end = (ptr + nbytes) & ~(_HUGE - 1)
    if end <= start:
        return False
    return bool(_madvise(start, end - start, _MADV_HUGEPAGE) == 0)


def empty_weight(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device | str,
    stride: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Uninitialised storage for a weight, on CPU advised into huge pages (see
    :func:`advise_huge_pages`)."""
    if stride is None:
        t = torch.empty(shape, dtype=dtype, device=device)
    else:
        t = torch.empty_strided(shape, stride, dtype=dtype, device=device)
    advise_huge_pages(t)
    return t


def out_major(
    dtype: torch.dtype, device: torch.device | str, fan_in: int, fan_out: int
) -> bool | None:
    """Whether a projection used as ``x @ W`` (``W`` logically ``[fan_in, fan_out]``) should be
    stored ``[fan_out, fan_in]`` in memory (each output's weights contiguous: the dot-product
    form) rather than ``[fan_in, fan_out]`` (each input's row contiguous: the axpy form).
    ``None``: no preference (CUDA, where cuBLAS reads both at the same speed).

    Decoding is one GEMV per weight, and on CPUs the two layouts reach very different read
    speeds (measured at 1 thread on an AVX2 host, matrices far beyond the last-level cache):

    * bf16/fp16: ``[fan_in, fan_out]`` runs through a generic kernel at 0.5-1.7 GB/s, 10-40x
      slower than ``[fan_out, fan_in]`` (16-17 GB/s, and it scales with threads), so reduced
      precision is always stored out-major (also transformers' ``nn.Linear`` layout);
    * fp32 (MKL): out-major wins when the output is narrower than the input (``[1024 -> 512]``:
      16.6 vs 12.8 GB/s) and in-major when it is wider (``[256 -> 1024]``: 18.7 vs 8.6 GB/s;
      ``[1024 -> 32000]``, the lm_head: 23.8 vs 17.5 GB/s).

    Decode on CPU runs through the native kernels of :mod:`.cpu_kernels` where they build: they
    read fp32 out-major at 29-33 GB/s and in-major at 16-25 GB/s (the lm_head [1024 -> 32000]:
    29.4 vs 16.6 GB/s, same host, huge pages), so with them every fp32 projection is stored
    out-major too; the MKL rule above is for hosts without them (``native_layout`` decides).
    """
    if torch.device(device).type == "cuda":
        return None
    if dtype in (torch.bfloat16, torch.float16):
        return True
    if torch.device(device).type in ("cpu", "meta") and native_layout():
        return True  # (meta: a model built to be materialised, on CPU when loaded here)
    return fan_out < fan_in


def native_layout() -> bool:
    """Whether CPU weights are laid out for the native decode kernels (they build and load on
    this host; the kernels' on/off switch does not move weights)."""
    from . import cpu_kernels

    return cpu_kernels.available()


def projection_strides(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str
) -> tuple[int, ...] | None:
    """Strides for a (possibly stacked, ``[E, fan_in, fan_out]``) projection of logical shape
    ``shape`` in the layout :func:`out_major` prefers; ``None`` for the default (row-major)."""
    fan_in, fan_out = shape[-2], shape[-1]
    if not out_major(dtype, device, fan_in, fan_out):
        return None
    batch = tuple(fan_in * fan_out * math.prod(shape[i + 1 : -2]) for i in range(len(shape) - 2))
    return (*batch, 1, fan_in)


def projection_weight(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """Storage for a projection seen as ``[..., fan_in, fan_out]`` (computed ``x @ W``), laid
    out in memory the way :func:`out_major` prefers for ``dtype`` on ``device``: callers index
    and transpose it by its logical shape and never depend on the strides."""
    return empty_weight(shape, dtype, device, projection_strides(shape, dtype, device))


_EPS: dict[tuple[float, torch.device], torch.Tensor] = {}


def _eps_tensor(eps: float, device: torch.device) -> torch.Tensor:
    t = _EPS.get((eps, device))
    if t is None:
        with torch.inference_mode(False):
            t = _EPS[(eps, device)] = torch.tensor(eps, dtype=torch.float32, device=device)
    return t


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """RMSNorm computed in fp32 and cast back before the weight multiply (the reference order).

    The mean square comes from one ``vector_norm`` reduction and in-place scalar ops: on CPU the
    composite ``F.rms_norm`` costs several times more per call, which adds up in decode steps.
    ``out`` (e.g. a cache row) receives the result without an extra copy.
    """
    xf = x if x.dtype == torch.float32 else x.float()
    n = torch.linalg.vector_norm(xf, dim=-1, keepdim=True)
    r = torch.addcmul(_eps_tensor(eps, x.device), n, n, value=1.0 / x.shape[-1]).rsqrt_()
    if x.dtype == torch.float32:
        if out is None:
            normed: torch.Tensor = (xf * r).mul_(weight)
            return normed
        result: torch.Tensor = torch.mul(xf, r, out=out).mul_(weight)
        return result
    res = weight * (xf * r).to(x.dtype)
    return res if out is None else out.copy_(res)


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def yarn_inv_freq(config: MoEConfig) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (fp32, length rope_dim/2) and the cos/sin magnitude factor.

    YaRN keeps high-frequency dims as they are (extrapolation), divides low-frequency ones by
    ``factor`` (interpolation) and ramps linearly between the two correction dims.
    """
    dim = config.qk_rope_head_dim
    base = config.rope_theta
    pos = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    inv_extra = 1.0 / pos
    if config.rope_type != "yarn":
        return inv_extra, 1.0
    rs = config.rope_scaling or {}
    factor = float(rs["factor"])
    orig = float(rs["original_max_position_embeddings"])
    beta_fast = float(rs.get("beta_fast") or 32)
    beta_slow = float(rs.get("beta_slow") or 1)
    mscale = rs.get("mscale")
    mscale_all_dim = rs.get("mscale_all_dim")
    if mscale and mscale_all_dim:
        attn_factor = _yarn_mscale(factor, float(mscale)) / _yarn_mscale(
            factor, float(mscale_all_dim)
        )
    else:
        attn_factor = _yarn_mscale(factor)

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(orig / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    hi = high + 0.001 if low == high else high
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (hi - low), 0, 1)
    extra_factor = 1 - ramp
    inv_inter = 1.0 / (factor * pos)
    inv = inv_inter * (1 - extra_factor) + inv_extra * extra_factor
    return inv, float(attn_factor)


class RotaryTables:
    """Rotations per position, grown on demand: ``cis`` (complex64, one unit-ish complex number
    per rotated pair, magnitude = the YaRN attention factor) and the same as real cos/sin tables
    in the model dtype."""

    def __init__(self, config: MoEConfig, *, dtype: torch.dtype, device: torch.device) -> None:
        self.inv_freq, self.attn_factor = yarn_inv_freq(config)
        self.dtype = dtype
        self.device = device
        self._grow(256)

    def _grow(self, n: int) -> None:
        # Same arithmetic as the reference: fp32 angles, cos/sin scaled, then cast.
        pos = torch.arange(n, dtype=torch.float32)
        freqs = pos[:, None] * self.inv_freq[None, :]
        cos = freqs.cos() * self.attn_factor
        sin = freqs.sin() * self.attn_factor
        self.cis = torch.complex(cos, sin).to(self.device)
        self.cos = cos.to(device=self.device, dtype=self.dtype)
        self.sin = sin.to(device=self.device, dtype=self.dtype)
        self.size = n

    def lookup(self, positions: torch.Tensor) -> Rotation:
        """Rotations for arbitrary ``positions`` (any shape)."""
        need = int(positions.max().item()) + 1 if positions.numel() else 0
        if need > self.size:
            self._grow(max(need, 2 * self.size))
        return Rotation(self.cis[positions], self.cos[positions], self.sin[positions])

    def range(self, start: int, length: int) -> Rotation:
        """Rotations for positions start..start+length-1, shaped [1, length, rope/2] (views)."""
        if start + length > self.size:
            self._grow(max(start + length, 2 * self.size))
        sl = slice(start, start + length)
        return Rotation(self.cis[None, sl], self.cos[None, sl], self.sin[None, sl])


class Rotation:
    """The rotations of one forward's tokens, [B or 1, T, rope/2], in complex and real form."""

    __slots__ = ("cis", "cos", "sin", "_matrix")

    def __init__(self, cis: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
        self.cis = cis
        self.cos = cos
        self.sin = sin
        self._matrix: torch.Tensor | None = None

    def matrix(self, interleave: bool) -> torch.Tensor:
        """For a single position: the rotation as a ``[rope, rope]`` matrix ``R`` with
        ``apply_rotary(x) == x @ R`` (same output layout). Built once per decode step and shared
        by every layer, it turns each layer's rope into one matmul instead of ~7 small ops."""
        if self._matrix is None:
            cos = self.cos.reshape(-1)
            sin = self.sin.reshape(-1)
            half = cos.shape[0]
            r = torch.zeros(2 * half, 2 * half, dtype=cos.dtype, device=cos.device)
            i = torch.arange(half, device=cos.device)
            first, second = (2 * i, 2 * i + 1) if interleave else (i, i + half)
            r[first, first] = cos
            r[second, second] = cos
            r[second, first] = -sin
            r[first, second] = sin
            self._matrix = r
        return self._matrix

    def per_head(self) -> Rotation:
        """The same rotations broadcastable over a head dim: [B, T, 1, rope/2]."""
        return Rotation(self.cis[:, :, None], self.cos[:, :, None], self.sin[:, :, None])


def _complex_view_ok(x: torch.Tensor) -> bool:
    return (
        x.stride(-1) == 1
        and x.storage_offset() % 2 == 0
        and all(s % 2 == 0 for s in x.stride()[:-1])
    )


def apply_rotary(x: torch.Tensor, rot: Rotation, interleave: bool) -> torch.Tensor:
    """Rotate the last dim of ``x`` by ``rot`` (broadcast against ``x[..., : d/2]``).

    With ``interleave`` the rotated pairs are adjacent, (x0, x1), (x2, x3), ..., and stay in place
    in the output. (The reference writes them de-interleaved instead; queries and keys always get
    the same layout, so q.k is unchanged, and the cache is private to this engine.) The pair
    rotation is one complex multiply; it runs in fp32 for every model dtype.
    Without ``interleave`` the pairs are (x_i, x_{i+d/2}) as in the reference.
    """
    if interleave:
        xf = x if x.dtype == torch.float32 and _complex_view_ok(x) else x.float().contiguous()
        xc = torch.view_as_complex(xf.view(*xf.shape[:-1], -1, 2))
        out = torch.view_as_real(xc * rot.cis).flatten(-2)
        return out if x.dtype == torch.float32 else out.to(x.dtype)
    half = x.shape[-1] // 2
    x1 = x[..., :half]
    x2 = x[..., half:]
    return torch.cat((x1 * rot.cos - x2 * rot.sin, x2 * rot.cos + x1 * rot.sin), dim=-1)
