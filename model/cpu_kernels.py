"""Native one-row (decode) matrix-vector products on CPU: build, load and call them.

Decoding multiplies one activation row by every active weight, and torch's stock CPU GEMV
kernels read weights well below the memory bandwidth (16-27 GB/s of ~34 on an AVX2 host, MKL's
fp32 GEMV on one thread only). ``cpu_kernels.c`` (shipped beside this module, plain C with AVX2,
FMA, F16C and OpenMP over output rows) reads them at the bound: fp32 (both layouts), bf16, FP8
e4m3 with block scales, and group-wise INT4, each accumulating in fp32.

The library is compiled on first use with the system C compiler (``$CC`` or ``gcc``) into
``$AGENT_RUNTIME_CACHE/kernels`` or ``~/.cache/agent-runtime/kernels``, named by a hash of the
source and flags and written atomically (two processes building at once both succeed). Where there
is no compiler, the CPU lacks AVX2/FMA/F16C, or the build fails, one warning is logged and every
wrapper here computes with torch instead (the exact reference); ``AGENT_RUNTIME_NATIVE_KERNELS=0``
forces that, and :func:`native_kernels` switches the kernels off (or on) for a block of code.

The wrappers take torch tensors, check dtype, device, layout and shape, and fall back to torch for
anything the kernels do not cover, so callers never need to know whether they ran.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "FLAGS",
    "INT4_GROUP",
    "Switch",
    "available",
    "bxw",
    "enabled",
    "fp8_xwt",
    "int4_pack",
    "int4_xwt",
    "library",
    "library_path",
    "native_kernels",
    "weight_layout",
    "xw",
]

log = logging.getLogger(__name__)

FLAGS: tuple[str, ...] = ("-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-shared", "-fPIC")
"""Compiler flags of the kernel library."""

INT4_GROUP = 32
"""Inputs per INT4 scale in the native layout (:func:`int4_pack`)."""

# The GEMV kernels and the fused decode step built on them (decode_step.py), one library, and
# the header they share (part of the build's hash).
_HERE = Path(__file__).parent
_SOURCES = (_HERE / "cpu_kernels.c", _HERE / "decode_step.c")
_HEADERS = (_HERE / "cpu_kernels.h",)
_ENV = "AGENT_RUNTIME_NATIVE_KERNELS"
_REQUIRED_CPU_FLAGS = ("avx2", "fma", "f16c")

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False


class Switch:
    """A process-wide on/off flag (on at first) that a ``with`` block can set for its duration."""

    def __init__(self) -> None:
        self.on = True

    @contextmanager
    def setting(self, on: bool) -> Iterator[None]:
        before = self.on
        self.on = on
        try:
            yield
        finally:
            self.on = before


_switch = Switch()  # set by native_kernels(); the environment variable is read at load time

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_INT = ctypes.c_int
_F = ctypes.c_float
_SIGNATURES: dict[str, list[type]] = {
    # w, ldw, x, x_bf16, y, y_bf16, out, in, alpha, accumulate, nthreads
    "ar_gemv_f32": [_P, _I64, _P, _INT, _P, _INT, _I64, _I64, _F, _INT, _INT],
    "ar_gemv_bf16": [_P, _I64, _P, _INT, _P, _INT, _I64, _I64, _F, _INT, _INT],
    # w, ldw, x, x_bf16, y (fp32), out, in, alpha, accumulate, nthreads
    "ar_gemv_f32t": [_P, _I64, _P, _INT, _P, _I64, _I64, _F, _INT, _INT],
    # w, ldw, scale, lds, bh, bw, x, x_bf16, y, y_bf16, out, in, alpha, accumulate, nthreads
    "ar_gemv_fp8": [_P, _I64, _P, _I64, _I64, _I64, _P, _INT, _P, _INT, _I64, _I64, _F, _INT, _INT],
    # w, scale, scale_bf16, groups, x, x_bf16, in, y, y_bf16, out, alpha, accumulate, nthreads
    "ar_gemv_int4": [_P, _P, _INT, _I64, _P, _INT, _I64, _P, _INT, _I64, _F, _INT, _INT],
    # w, w_bf16, w_stride, ldw, x, x_stride, y, y_stride, out, in, batch, nthreads
    "ar_gemv_batched": [_P, _INT, _I64, _I64, _P, _I64, _P, _I64, _I64, _I64, _I64, _INT],
}


def _cpu_supported() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return all(f in flags for f in _REQUIRED_CPU_FLAGS)
    return False


def _cache_dir() -> Path:
    root = os.environ.get("AGENT_RUNTIME_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "agent-runtime"
    return base / "kernels"


def library_path() -> Path:
    """Where the compiled library for this source and these flags lives (or will)."""
    text = b"".join(f.read_bytes() for f in (*_SOURCES, *_HEADERS)) + " ".join(FLAGS).encode()
    digest = hashlib.sha256(text).hexdigest()[:16]
    return _cache_dir() / f"cpu_kernels-{digest}.so"


def _build(target: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("no C compiler found (set CC or install gcc)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem, suffix=".tmp.so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run(
            [compiler, *FLAGS, "-o", tmp, *(str(src) for src in _SOURCES), "-lm"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {proc.stderr.strip()[-2000:]}")
        os.replace(tmp, target)  # atomic: a concurrent builder's identical file is replaced
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load() -> ctypes.CDLL | None:
    global _lib, _tried
    with _lock:
        if _tried:
            return _lib
        _tried = True
        if os.environ.get(_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
            log.info("native CPU kernels disabled by %s", _ENV)
            return None
        if not _cpu_supported():
            log.warning("native CPU kernels need x86-64 with AVX2, FMA and F16C; using torch")
            return None
        try:
            path = library_path()
            if not path.exists():
                _build(path)
            # torch is imported first, so the OpenMP runtime it loaded (same soname) is reused:
            # one thread pool for both.
            lib = ctypes.CDLL(str(path))
            for name, argtypes in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.argtypes = argtypes
                fn.restype = ctypes.c_int
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            log.warning("native CPU kernels unavailable (%s); using torch", exc)
            return None
        _lib = lib
        return lib


def available() -> bool:
    """Whether the native library is built and loaded (building it on the first call)."""
    return _load() is not None


def enabled() -> bool:
    """Whether the wrappers use the native kernels now (available and not switched off)."""
    return _active() is not None


def native_kernels(on: bool) -> AbstractContextManager[None]:
    """Use (``True``) or bypass (``False``) the native kernels inside the block, process-wide:
    e.g. ``with native_kernels(False):`` runs everything through torch's kernels."""
    return _switch.setting(on)


def library() -> ctypes.CDLL | None:
    """The loaded library while the native kernels are on, else ``None`` (for modules that call
    its other entry points, e.g. :mod:`.decode_step`)."""
    return _active()


def _active() -> ctypes.CDLL | None:
    if not _switch.on:
        return None
    return _lib if _tried else _load()


_DTYPE_FLAG = {torch.float32: 0, torch.bfloat16: 1}


def _target(
    x: torch.Tensor, n_out: int, out: torch.Tensor | None, accumulate: bool
) -> tuple[torch.Tensor, bool]:
    """Where a kernel writes its row and whether it adds to it: a fresh ``[1, n_out]`` row in
    ``x``'s dtype (overwritten), or the caller's ``out`` (added to when ``accumulate``)."""
    if out is None:
        return torch.empty(1, n_out, dtype=x.dtype), False
    return out, accumulate


def _row_ok(t: torch.Tensor, n: int) -> bool:
    return t.is_cpu and t.numel() == n and t.is_contiguous() and t.dtype in _DTYPE_FLAG


def _finish(
    y: torch.Tensor, out: torch.Tensor | None, alpha: float, accumulate: bool
) -> torch.Tensor:
    """The torch fallback's output semantics: ``out = out + alpha * y`` or ``out = alpha * y``."""
    if out is None:
        return y.mul_(alpha) if alpha != 1.0 else y
    if accumulate:
        return out.add_(y.view(out.shape), alpha=alpha)
    if alpha != 1.0:
        y = y.mul(alpha)
    return out.copy_(y.view(out.shape))


def weight_layout(w: torch.Tensor) -> tuple[Literal["dot", "axpy"], int] | None:
    """How the kernels read a weight seen as ``[..., in, out]`` (its last two dimensions; any
    leading ones are a batch): ``("dot", ld)`` when each output's weights are contiguous (stored
    ``[out, in]``, rows ``ld`` elements apart; fp32 or bf16), ``("axpy", ld)`` when each input's
    row is (stored ``[in, out]``; fp32 only), ``None`` for anything else (torch computes it)."""
    n_in, n_out = w.shape[-2], w.shape[-1]
    s0, s1 = w.stride()[-2], w.stride()[-1]
    if s0 == 1 and s1 >= n_in and w.dtype in _DTYPE_FLAG:
        return "dot", s1
    if s1 == 1 and s0 >= n_out and w.dtype == torch.float32:
        return "axpy", s0
    return None


def xw(
    x: torch.Tensor,
    w: torch.Tensor,
    out: torch.Tensor | None = None,
    *,
    alpha: float = 1.0,
    accumulate: bool = False,
) -> torch.Tensor:
    """``x @ w`` for one row ``x`` ([1, in] or [in]) and a float weight ``w`` seen as ``[in,
    out]``, stored either way (``w.t()`` row-major, the dot-product form, in fp32 or bf16; or
    row-major, the axpy form, fp32 only). With ``out``: ``out = alpha * x @ w`` or, with
    ``accumulate``, ``out += alpha * x @ w`` (``out`` is returned); else a new ``[1, out]`` tensor
    in ``x.dtype``. Anything else (more rows, other dtypes or layouts, kernels off) runs torch."""
    lib = _active()
    if lib is not None and w.dim() == 2 and w.is_cpu:
        n_in, n_out = w.shape
        if _row_ok(x, n_in) and (out is None or _row_ok(out, n_out)):
            y, acc = _target(x, n_out, out, accumulate)
            threads = torch.get_num_threads()
            layout = weight_layout(w)
            if layout is not None and layout[0] == "dot":
                fn = lib.ar_gemv_bf16 if w.dtype == torch.bfloat16 else lib.ar_gemv_f32
                rc = fn(
                    w.data_ptr(), layout[1], x.data_ptr(), _DTYPE_FLAG[x.dtype], y.data_ptr(),
                    _DTYPE_FLAG[y.dtype], n_out, n_in, alpha, acc, threads,
                )  # fmt: skip
                if rc == 0:
                    return y
            elif layout is not None and y.dtype == w.dtype:  # axpy: fp32 output only
                rc = lib.ar_gemv_f32t(
                    w.data_ptr(), layout[1], x.data_ptr(), _DTYPE_FLAG[x.dtype], y.data_ptr(),
                    n_out, n_in, alpha, acc, threads,
                )  # fmt: skip
                if rc == 0:
                    return y
    x2 = x if x.dim() == 2 else x.reshape(1, -1)
    prod = torch.mm(x2, w if w.dtype == x.dtype else w.to(x.dtype))
    return _finish(prod, out, alpha, accumulate)


def bxw(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Batched one-row products (the heads of an attention layer): ``x`` [B, in] fp32 (rows may
    be strided, elements contiguous) and ``w`` [B, in, out] fp32 or bf16 with each ``w[b]``
    stored ``[out, in]`` row-major -> ``x[b] @ w[b]`` as [B, 1, out] fp32. Anything else runs
    ``torch.bmm`` (in fp32)."""
    lib = _active()
    if (
        lib is not None
        and x.dim() == 2
        and w.dim() == 3
        and x.is_cpu
        and w.is_cpu
        and x.dtype == torch.float32
        and w.dtype in _DTYPE_FLAG
        and x.stride(1) == 1
    ):
        batch, n_in, n_out = w.shape
        layout = weight_layout(w)
        if x.shape == (batch, n_in) and layout is not None and layout[0] == "dot":
            y = torch.empty(batch, 1, n_out, dtype=torch.float32)
            rc = lib.ar_gemv_batched(
                w.data_ptr(), _DTYPE_FLAG[w.dtype], w.stride(0), layout[1], x.data_ptr(),
                x.stride(0), y.data_ptr(), n_out, n_out, n_in, batch, torch.get_num_threads(),
            )  # fmt: skip
            if rc == 0:
                return y
    return torch.bmm(x.float().unsqueeze(1), w.float())


def fp8_xwt(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale_inv: torch.Tensor,
    block: tuple[int, int],
    out: torch.Tensor | None = None,
    *,
    alpha: float = 1.0,
    accumulate: bool = False,
) -> torch.Tensor | None:
    """``x @ W.T`` for one row ``x`` and an e4m3 weight ``W`` [out, in] with one fp32 scale per
    ``block`` (``scale_inv`` [ceil(out/bh), ceil(in/bw)], contiguous), ``out`` as in :func:`xw`.
    ``None`` where the kernel does not apply (the caller computes the reference way); the weight
    must hold no NaN codes (the kernel reads 0x7f as 480)."""
    lib = _active()
    if lib is None or not weight.is_cpu or not weight.is_contiguous():
        return None
    n_out, n_in = weight.shape
    if not _row_ok(x, n_in) or (out is not None and not _row_ok(out, n_out)):
        return None
    if scale_inv.dtype != torch.float32 or not scale_inv.is_contiguous():
        return None
    y, acc = _target(x, n_out, out, accumulate)
    bh, bw = block
    rc = lib.ar_gemv_fp8(
        weight.data_ptr(), n_in, scale_inv.data_ptr(), scale_inv.shape[1], bh, bw, x.data_ptr(),
        _DTYPE_FLAG[x.dtype], y.data_ptr(), _DTYPE_FLAG[y.dtype], n_out, n_in, alpha, acc,
        torch.get_num_threads(),
    )  # fmt: skip
    return y if rc == 0 else None


def int4_pack(q: torch.Tensor) -> torch.Tensor:
    """Signed int4 values ``q`` [out, in] (in [-8, 7]) -> the native layout: uint8 [out,
    groups * 16], per group of :data:`INT4_GROUP` inputs byte ``j`` holding ``q[g*32+j] + 8`` in
    its low nibble and ``q[g*32+16+j] + 8`` in its high nibble (padding codes 8, i.e. zero)."""
    n, k = q.shape
    groups = -(-k // INT4_GROUP)
    u = F.pad(q.to(torch.int16) + 8, (0, groups * INT4_GROUP - k), value=8)
    u = u.view(n, groups, 2, INT4_GROUP // 2).to(torch.uint8)
    return (u[:, :, 0] | (u[:, :, 1] << 4)).reshape(n, groups * INT4_GROUP // 2).contiguous()


def int4_xwt(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    n_in: int,
    out: torch.Tensor | None = None,
    *,
    alpha: float = 1.0,
    accumulate: bool = False,
) -> torch.Tensor | None:
    """``x @ W.T`` for one row ``x`` and an INT4 weight in the :func:`int4_pack` layout with fp32
    or bf16 ``scale`` [out, groups] (``w = q * scale``), ``n_in`` inputs; ``out`` as in :func:`xw`.
    ``None`` where the kernel does not apply."""
    lib = _active()
    if lib is None or not packed.is_cpu or packed.dtype != torch.uint8:
        return None
    n_out, width = packed.shape
    groups = width * 2 // INT4_GROUP
    if not packed.is_contiguous() or groups * INT4_GROUP < n_in:
        return None
    if (
        scale.dtype not in _DTYPE_FLAG
        or not scale.is_contiguous()
        or scale.shape != (n_out, groups)
    ):
        return None
    if not _row_ok(x, n_in) or (out is not None and not _row_ok(out, n_out)):
        return None
    y, acc = _target(x, n_out, out, accumulate)
    rc = lib.ar_gemv_int4(
        packed.data_ptr(), scale.data_ptr(), _DTYPE_FLAG[scale.dtype], groups, x.data_ptr(),
        _DTYPE_FLAG[x.dtype], n_in, y.data_ptr(), _DTYPE_FLAG[y.dtype], n_out, alpha, acc,
        torch.get_num_threads(),
    )  # fmt: skip
    return y if rc == 0 else None
