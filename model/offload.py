"""Routed experts offloaded: read from the memory-mapped checkpoint (or CPU RAM) as layers need them.

A Kimi K2-sized model has ~1T parameters, almost all of them in routed experts, of which a token
uses 8 per layer. This module keeps attention, dense layers, shared experts and routers resident
and gives each MoE layer an :class:`OffloadedExpertBank` (the :class:`~.experts.ExpertBank` seam):

* the **source** of routed experts is the checkpoint's safetensors files, memory-mapped
  (:class:`MappedSafetensors`: the 8-byte header length and JSON header are parsed here and each
  tensor is a zero-copy view of the mapping; nothing reads a whole file), or, with
  ``source="ram"``, a copy of the expert tensors in CPU RAM (pinned when the model is on CUDA).
  Experts may be dense float, FP8 blocks, compressed-tensors INT4 (each kept in that format, as
  the resident loader keeps them) or an INT4 expert store (:mod:`.offload_store`: the CPU
  kernel's layout, so a miss is a plain read with no conversion);
* a budget of **resident** experts (:class:`~.expert_cache.ExpertCache`: a count and/or bytes,
  LRU or LFU, shared by all layers) holds experts ready to compute on the model's device (CPU RAM
  on CPU, GPU memory with CUDA). A miss reads the expert's tensors from the source and builds its
  :class:`~.experts.ExpertLinear` pair there;
* a **prefetcher**: when layer L fetches its experts, layer L+1's router is applied to layer L's
  MoE input (the standard predictor: the residual stream changes little between layers) and the
  predicted experts are loaded on a background thread while layer L computes. A wrong guess costs
  only bandwidth; a prediction still loading when layer L+1 asks is waited for, not read twice;
  one that layer L+1 has already passed is dropped.

The weights a bank returns are built exactly as a resident model builds them, so logits are
bit-equal to the same model with every expert resident, whatever the budget, policy or prefetch.

Use :func:`load_offloaded` (a checkpoint directory to a model whose experts stay on disk), then
:func:`expert_offload` on the model for statistics (:class:`OffloadStats`) and the cache.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch

from agent_runtime.errors import UserError

from .expert_cache import CachePolicy, CacheStats, ExpertCache
from .experts import DenseExpertLinear, ExpertLinear, ExpertPair
from .layers import empty_weight
from .moe import MoEBlock, select_experts

if TYPE_CHECKING:
    from .config import MoEConfig
    from .transformer import MoEForCausalLM

__all__ = [
    "ExpertOffload",
    "MappedSafetensors",
    "OffloadConfig",
    "OffloadError",
    "OffloadStats",
    "OffloadedExpertBank",
    "attach_offload",
    "checkpoint_config",
    "detect_expert_format",
    "expert_offload",
    "load_offloaded",
    "quantization_config",
]

_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"
_PAGE = mmap.PAGESIZE
_EXPERT_KEY = ".mlp.experts."
_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


class OffloadError(UserError):
    """A checkpoint or configuration the offloaded experts cannot be served from."""


# --------------------------------------------------------------------------------------------------
# The mapped checkpoint


@dataclass(frozen=True)
class _Span:
    file: int  # index into MappedSafetensors._maps
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int


class MappedSafetensors:
    """The safetensors files of a checkpoint directory, memory-mapped; tensors are zero-copy views.

    Each file's header (8-byte little-endian length, then JSON) is parsed here; the data stays in
    the read-only mapping until a view is read (views must only be read: a write faults). :meth:`release` drops this process's pages of some tensors (the OS page cache
    may keep them: a later read is then a "warm" RAM read), :meth:`drop_page_cache` asks the OS to
    forget the files' cached pages too (the next read comes from the disk).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        index = self.root / _INDEX
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                names = sorted({str(v) for v in weight_map.values()})
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise OffloadError(f"{index} is not a safetensors index: {exc}") from exc
        elif (self.root / _SINGLE).is_file():
            names = [_SINGLE]
        else:
            raise OffloadError(f"{self.root} holds neither {_SINGLE} nor {_INDEX}")
        self.files = [self.root / n for n in names]
        self._maps: list[mmap.mmap] = []
        self._spans: dict[str, _Span] = {}
        try:
            for i, path in enumerate(self.files):
                self._map(i, path)
        except BaseException:
            self.close()
            raise

    def _map(self, i: int, path: Path) -> None:
        with open(path, "rb") as f:
            head = f.read(8)
            size = os.fstat(f.fileno()).st_size
            if len(head) != 8:
                raise OffloadError(f"{path} is too short to be a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 << 20):
                raise OffloadError(f"{path}: header length {n} does not fit the file")
            try:
                header = json.loads(f.read(n))
            except ValueError as exc:
                raise OffloadError(f"{path}: the header is not JSON: {exc}") from exc
            self._maps.append(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        base = 8 + n
        for key, info in header.items():
            if key == "__metadata__":
                continue
            try:
                dtype = _DTYPES[info["dtype"]]
                shape = tuple(int(d) for d in info["shape"])
                begin, end = (int(o) + base for o in info["data_offsets"])
            except (KeyError, TypeError, ValueError) as exc:
                raise OffloadError(f"{path}: bad header entry for {key}: {exc}") from exc
            numel = 1
            for d in shape:
                numel *= d
            if end > size or end - begin != numel * torch.empty(0, dtype=dtype).element_size():
                raise OffloadError(f"{path}: {key} does not fit its data offsets")
            if key in self._spans:
                raise OffloadError(f"{key} is stored twice ({self.files[self._spans[key].file]})")
            self._spans[key] = _Span(i, dtype, shape, begin, end)

    def __contains__(self, key: str) -> bool:
        return key in self._spans

    def keys(self) -> list[str]:
        return list(self._spans)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._spans[key].shape

    def nbytes(self, key: str) -> int:
        s = self._spans[key]
        return s.end - s.start

    def view(self, key: str) -> torch.Tensor:
        """The tensor as a view of the mapping (no data is read until it is used)."""
        s = self._spans[key]
        with warnings.catch_warnings():  # the mapping is read-only, and only ever read from
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.frombuffer(
                self._maps[s.file], dtype=torch.uint8, count=s.end - s.start, offset=s.start
            )
        return raw.view(s.dtype).view(s.shape)

    def release(self, keys: Sequence[str]) -> None:
        """Unmap this process's pages of ``keys`` (``madvise(MADV_DONTNEED)``): resident memory
        then holds only what was copied out. The pages at the edges may hold neighbouring
        tensors; those are simply read again if needed."""
        for key in keys:
            s = self._spans[key]
            start = s.start - s.start % _PAGE
            self._maps[s.file].madvise(mmap.MADV_DONTNEED, start, s.end - start)

    def drop_page_cache(self) -> None:
        """Release every mapped page and ask the OS to evict the files from its page cache
        (``posix_fadvise(DONTNEED)``), so the next reads come from the disk."""
        for m in self._maps:
            m.madvise(mmap.MADV_DONTNEED)
        for path in self.files:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)

    def close(self) -> None:
        for m in self._maps:
            try:
                m.close()
            except BufferError:  # views still alive: the mapping goes when they do
                pass
        self._maps = []


# --------------------------------------------------------------------------------------------------
# Expert formats in the checkpoint


class _ExpertFormat(Protocol):
    """How one expert is stored in the checkpoint and built into a ready-to-compute pair."""

    name: str

    def keys(self, prefix: str) -> list[str]:
        """The checkpoint keys of the expert whose keys start with ``prefix``."""
        ...

    def build(
        self, raw: Mapping[str, torch.Tensor], prefix: str, dtype: torch.dtype, device: torch.device
    ) -> ExpertPair:
        """The (gate_up, down) pair from the expert's tensors (views of the source)."""
        ...


_PROJ = ("gate_proj", "up_proj", "down_proj")


class _DenseFormat:
    """Float ``gate_proj`` / ``up_proj`` / ``down_proj`` weights, cast to the model dtype exactly as
    the resident loader casts them (one ``copy_`` from the stored dtype)."""

    name = "dense"

    def keys(self, prefix: str) -> list[str]:
        return [f"{prefix}{p}.weight" for p in _PROJ]

    def build(
        self, raw: Mapping[str, torch.Tensor], prefix: str, dtype: torch.dtype, device: torch.device
    ) -> ExpertPair:
        gate, up, down = (raw[k] for k in self.keys(prefix))
        inter = gate.shape[0]
        gate_up = empty_weight((2 * inter, gate.shape[1]), dtype, device)
        gate_up[:inter].copy_(gate)
        gate_up[inter:].copy_(up)
        down_w = empty_weight(tuple(down.shape), dtype, device)
        down_w.copy_(down)
        return DenseExpertLinear(gate_up), DenseExpertLinear(down_w)


class _Fp8Format:
    """FP8 e4m3 ``weight`` + ``weight_scale_inv`` blocks (DeepSeek-V3 / Kimi K2), kept FP8 as the
    resident FP8 loader keeps them (:class:`~.quant.Fp8BlockLinear`; gate and up as one weight
    when the gate's rows fill whole blocks, else stacked)."""

    name = "fp8"

    def __init__(self, block: tuple[int, int]) -> None:
        self.block = block

    def keys(self, prefix: str) -> list[str]:
        return [f"{prefix}{p}.weight{s}" for p in _PROJ for s in ("", "_scale_inv")]

    def build(
        self, raw: Mapping[str, torch.Tensor], prefix: str, dtype: torch.dtype, device: torch.device
    ) -> ExpertPair:
        from .quant import Fp8BlockLinear, StackedRows

        def part(p: str) -> tuple[torch.Tensor, torch.Tensor]:
            w, s = raw[f"{prefix}{p}.weight"], raw[f"{prefix}{p}.weight_scale_inv"]
            return w.to(device, copy=True), s.to(device, copy=True)

        (gw, gs), (uw, us), (dw, ds) = part("gate_proj"), part("up_proj"), part("down_proj")
        gate_up: ExpertLinear
        if gw.shape[0] % self.block[0] == 0:
            gate_up = Fp8BlockLinear(torch.cat([gw, uw]), torch.cat([gs, us]), self.block)
        else:
            gate_up = StackedRows(
                [Fp8BlockLinear(gw, gs, self.block), Fp8BlockLinear(uw, us, self.block)]
            )
        return gate_up, Fp8BlockLinear(dw, ds, self.block)


class _PackQuantizedFormat:
    """compressed-tensors ``pack-quantized`` INT4 (Kimi K2 Thinking), unpacked into
    :class:`~.quant.Int4Linear` as the resident loader does it: each miss pays the conversion into
    the kernel's layout (see :mod:`.offload_store` for a store that does not)."""

    name = "int4-pack-quantized"

    def __init__(self, group_size: int) -> None:
        self.group_size = group_size

    def keys(self, prefix: str) -> list[str]:
        return [f"{prefix}{p}.weight_{s}" for p in _PROJ for s in ("packed", "scale", "shape")]

    def build(
        self, raw: Mapping[str, torch.Tensor], prefix: str, dtype: torch.dtype, device: torch.device
    ) -> ExpertPair:
        from .compressed_tensors import unpack_int4
        from .quant import Int4Linear

        def part(p: str) -> tuple[torch.Tensor, torch.Tensor]:
            shape = raw[f"{prefix}{p}.weight_shape"].tolist()
            q = unpack_int4(raw[f"{prefix}{p}.weight_packed"], shape)
            return q.to(device), raw[f"{prefix}{p}.weight_scale"].to(device, copy=True)

        (gq, gs), (uq, us), (dq, ds) = part("gate_proj"), part("up_proj"), part("down_proj")
        gate_up = Int4Linear(torch.cat([gq, uq]), torch.cat([gs, us]), self.group_size)
        return gate_up, Int4Linear(dq, ds, self.group_size)


def quantization_config(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``quantization_config`` of a checkpoint directory's ``config.json`` (``{}``: none)."""
    return _quantization(Path(root))


def _quantization(root: Path) -> dict[str, Any]:
    try:
        raw = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    qc = raw.get("quantization_config") if isinstance(raw, dict) else None
    return qc if isinstance(qc, dict) else {}


def checkpoint_config(root: str | os.PathLike[str]) -> MoEConfig:
    """The model config of a checkpoint directory; a compressed-tensors ``quantization_config``
    is set aside (only routed experts are packed, and they are the offload formats' business)."""
    from .checkpoint import CheckpointError
    from .config import MoEConfig

    path = Path(root) / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if _quantization(Path(root)).get("quant_method") == "compressed-tensors":
            raw = {k: v for k, v in raw.items() if k != "quantization_config"}
        return MoEConfig.from_hf(raw)
    except (OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def detect_expert_format(
    ckpt: MappedSafetensors, prefix: str, quantization: Mapping[str, Any] | None = None
) -> _ExpertFormat:
    """The storage format of the expert whose keys start with ``prefix``: an INT4 expert store
    (:mod:`.offload_store`), compressed-tensors INT4, FP8 blocks or dense float weights
    (``quantization``: the checkpoint's ``quantization_config``, for group and block sizes)."""
    from .compressed_tensors import parse_pack_quantized
    from .fp8 import DEFAULT_BLOCK_SIZE
    from .offload_store import Int4PackedFormat

    qc = quantization or {}
    packed = Int4PackedFormat()
    if all(k in ckpt for k in packed.keys(prefix)):
        return packed
    if f"{prefix}gate_proj.weight_packed" in ckpt:
        try:
            group = parse_pack_quantized(qc).group_size
        except ValueError as exc:
            raise OffloadError(f"packed INT4 experts but {exc}") from exc
        return _PackQuantizedFormat(group)
    if f"{prefix}gate_proj.weight_scale_inv" in ckpt:
        block = qc.get("weight_block_size") or DEFAULT_BLOCK_SIZE
        return _Fp8Format((int(block[0]), int(block[1])))
    dense = _DenseFormat()
    missing = [k for k in dense.keys(prefix) if k not in ckpt]
    if missing:
        raise OffloadError(f"the checkpoint has no routed expert weights {missing}")
    for k in dense.keys(prefix):
        if not ckpt.view(k).is_floating_point() or ckpt.view(k).dtype.itemsize == 1:
            raise OffloadError(f"{k} is not a float weight and no quantised format matches it")
    return dense


# --------------------------------------------------------------------------------------------------
# Configuration and statistics


@dataclass(frozen=True)
class OffloadConfig:
    """How routed experts are offloaded.

    ``source``: ``"disk"`` (served from the memory-mapped checkpoint) or ``"ram"`` (every expert's
    tensors copied once into CPU RAM; pinned for a CUDA model). ``max_experts`` / ``max_bytes``:
    the budget of experts kept resident on the model's device, all layers together (``None`` for
    both: every expert read stays). ``policy``: ``"lru"`` or ``"lfu"``. ``prefetch``: predict and
    load the next layer's experts in the background. ``prefetch_max``: experts predicted per layer
    and step (default the layer's top-k; for many tokens the most often predicted ones).
    ``release_pages``: after copying an expert out of the mapping, drop the process's pages of it,
    so resident memory is the budget, not the budget plus every page ever read. ``experts_dir``:
    read the routed experts from this directory instead of the checkpoint (an INT4 store written
    by :func:`~.offload_store.write_expert_store`: no conversion per miss).
    """

    source: Literal["disk", "ram"] = "disk"
    max_experts: int | None = None
    max_bytes: int | None = None
    policy: CachePolicy = "lru"
    prefetch: bool = True
    prefetch_max: int | None = None
    release_pages: bool = True
    experts_dir: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        if self.source not in ("disk", "ram"):
            raise ValueError(f"source must be 'disk' or 'ram', got {self.source!r}")
        if self.policy not in ("lru", "lfu"):
            raise ValueError(f"policy must be 'lru' or 'lfu', got {self.policy!r}")
        for name in ("max_experts", "max_bytes", "prefetch_max"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")


@dataclass
class OffloadStats:
    """The cache's counters plus the loader's: loads by who asked (``demand_loads`` stall the
    forward, ``prefetch_loads`` run beside it), seconds spent in each, and predictions that were
    still loading when their layer asked (``prefetch_late``: waited for, not read twice)."""

    cache: CacheStats = field(default_factory=CacheStats)
    demand_loads: int = 0
    demand_load_s: float = 0.0
    prefetch_load_s: float = 0.0
    prefetch_late: int = 0
    prefetch_stale: int = 0  # predictions dropped because their layer had already run
    resident_experts: int = 0
    resident_bytes: int = 0

    def as_dict(self) -> dict[str, float]:
        out = {k: float(v) for k, v in asdict(self).items() if k != "cache"}
        out.update(self.cache.as_dict())
        return out


# --------------------------------------------------------------------------------------------------
# The store shared by a model's banks, and the banks


class _Source(Protocol):
    def tensors(self, keys: Sequence[str]) -> dict[str, torch.Tensor]: ...

    def done(self, keys: Sequence[str]) -> None: ...


class _DiskSource:
    def __init__(self, ckpt: MappedSafetensors, release: bool) -> None:
        self.ckpt = ckpt
        self.release = release

    def tensors(self, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        return {k: self.ckpt.view(k) for k in keys}

    def done(self, keys: Sequence[str]) -> None:
        if self.release:
            self.ckpt.release(keys)


class _RamSource:
    def __init__(self, ckpt: MappedSafetensors, keys: Sequence[str], pin: bool) -> None:
        self.store: dict[str, torch.Tensor] = {}
        for k in keys:
            view = ckpt.view(k)
            copy = torch.empty(view.shape, dtype=view.dtype, pin_memory=pin)
            copy.copy_(view)
            self.store[k] = copy
            ckpt.release([k])

    def tensors(self, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        return {k: self.store[k] for k in keys}

    def done(self, keys: Sequence[str]) -> None:
        pass


def _size(pair: ExpertPair) -> int:
    return pair[0].nbytes + pair[1].nbytes


@dataclass
class _Pending:
    """An expert being loaded: whoever else needs it waits on ``future``."""

    future: Future[ExpertPair] = field(default_factory=Future)
    demanded: bool = False  # a forward is waiting: not a prefetch hit-to-be any more


class ExpertOffload:
    """The resident-expert cache, the source and the prefetch thread of one model's banks."""

    def __init__(
        self,
        ckpt: MappedSafetensors,
        config: OffloadConfig,
        *,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.ckpt = ckpt
        self.config = config
        self.dtype = dtype
        self.device = device
        self.cache: ExpertCache[ExpertPair] = ExpertCache(
            max_items=config.max_experts, max_bytes=config.max_bytes, policy=config.policy
        )
        self.banks: list[OffloadedExpertBank] = []
        self._source: _Source = _DiskSource(ckpt, config.release_pages)
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._stats = OffloadStats()
        self._executor: ThreadPoolExecutor | None = None
        self._stream: object | None = None

    def _use_ram(self) -> None:
        keys = [k for bank in self.banks for e in range(bank.n_experts) for k in bank.keys(e)]
        self._source = _RamSource(self.ckpt, keys, pin=self.device.type == "cuda")

    # ------------------------------------------------------------------ loading
    def _read(self, bank: OffloadedExpertBank, expert: int) -> tuple[ExpertPair, int]:
        keys = bank.keys(expert)
        raw = self._source.tensors(keys)
        pair = bank.fmt.build(raw, bank.prefix(expert), self.dtype, self.device)
        nbytes = sum(t.numel() * t.element_size() for t in raw.values())
        del raw
        self._source.done(keys)
        return pair, nbytes

    def get(self, bank: OffloadedExpertBank, expert: int) -> ExpertPair:
        """The expert ready to compute: from the cache, from a load in flight, or read now."""
        key = (bank.layer, expert)
        with self._lock:
            pair = self.cache.get(key)
            if pair is not None:
                return pair
            pending = self._pending.get(key)
            if pending is not None:
                pending.demanded = True
                self._stats.prefetch_late += 1
                owner = False
            else:
                pending = self._pending[key] = _Pending(demanded=True)
                owner = True
        if not owner:
            return pending.future.result()
        t0 = time.perf_counter()
        try:
            pair, nbytes = self._read(bank, expert)
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            pending.future.set_exception(exc)
            raise
        with self._lock:
            self.cache.put(key, pair, _size(pair), loaded_bytes=nbytes)
            del self._pending[key]
            self._stats.demand_loads += 1
            self._stats.demand_load_s += time.perf_counter() - t0
        pending.future.set_result(pair)
        return pair

    def prefetch(self, bank: OffloadedExpertBank, experts: Sequence[int]) -> None:
        """Load ``experts`` of ``bank`` in the background (until ``bank`` is next fetched)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="expert-prefetch")
        self._executor.submit(self._prefetch, bank, list(experts), bank.calls)

    def _prefetch(self, bank: OffloadedExpertBank, experts: list[int], calls: int) -> None:
        for e in experts:
            if bank.calls != calls:  # the layer ran already: the rest of the guess is moot
                with self._lock:
                    self._stats.prefetch_stale += 1
                return
            key = (bank.layer, e)
            with self._lock:
                if key in self.cache or key in self._pending:
                    continue
                pending = self._pending[key] = _Pending()
            t0 = time.perf_counter()
            try:
                pair, nbytes = self._read_in_background(bank, e)
            except BaseException as exc:  # the demand path will read it again and raise there
                with self._lock:
                    del self._pending[key]
                pending.future.set_exception(exc)
                return
            with self._lock:
                self.cache.put(
                    key,
                    pair,
                    _size(pair),
                    loaded_bytes=nbytes,
                    prefetched=True,
                    demanded=pending.demanded,
                )
                del self._pending[key]
                self._stats.prefetch_load_s += time.perf_counter() - t0
            pending.future.set_result(pair)

    def _read_in_background(self, bank: OffloadedExpertBank, expert: int) -> tuple[ExpertPair, int]:
        if self.device.type != "cuda":
            return self._read(bank, expert)
        # A side stream, so the copies overlap the forward's kernels; synchronised before the
        # expert is published, so whoever uses it sees finished weights.
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        stream = self._stream
        assert isinstance(stream, torch.cuda.Stream)
        with torch.cuda.stream(stream):
            out = self._read(bank, expert)
        stream.synchronize()
        return out

    # ------------------------------------------------------------------ reporting
    def stats(self) -> OffloadStats:
        with self._lock:
            s = replace(self._stats, cache=replace(self.cache.stats))
            s.resident_experts = len(self.cache)
            s.resident_bytes = self.cache.resident_bytes
        return s

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = OffloadStats()
            self.cache.reset_stats()

    def wait_prefetch(self) -> None:
        """Block until every queued prediction has been loaded or dropped (tests, benchmarks)."""
        if self._executor is not None:
            self._executor.submit(lambda: None).result()

    def clear(self) -> None:
        """Drop every resident expert (the next forward reads all its experts again)."""
        self.wait_prefetch()
        self.cache.clear()

    def close(self) -> None:
        """Stop the prefetcher and drop the resident experts (the model cannot run after it)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.cache.clear()
        self.ckpt.close()


class OffloadedExpertBank:
    """The routed experts of one MoE layer, served by an :class:`ExpertOffload`."""

    def __init__(
        self,
        offload: ExpertOffload,
        layer: int,
        n_experts: int,
        fmt: _ExpertFormat,
        predict: Callable[[torch.Tensor], list[int]],
    ) -> None:
        self.offload = offload
        self.layer = layer
        self.n_experts = n_experts
        self.fmt = fmt
        self.predict = predict  # this layer's router applied to a (previous layer's) input
        self.next: OffloadedExpertBank | None = None
        self.calls = 0
        self._keys = [fmt.keys(self.prefix(e)) for e in range(n_experts)]

    def prefix(self, expert: int) -> str:
        return f"model.layers.{self.layer}.mlp.experts.{expert}."

    def keys(self, expert: int) -> list[str]:
        return self._keys[expert]

    def fetch(self, ids: Sequence[int], x: torch.Tensor) -> Sequence[ExpertPair]:
        self.calls += 1
        # This layer's experts first (a miss stalls the forward now), then the prediction for the
        # next layer, loaded while this one computes; queued after, so that under a tight budget
        # the prediction evicts this layer's experts (used by now) rather than the reverse.
        pairs = [self.offload.get(self, e) for e in ids]
        nxt = self.next
        if nxt is not None and self.offload.config.prefetch:
            self.offload.prefetch(nxt, nxt.predict(x))
        return pairs

    @property
    def resident_bytes(self) -> int:
        cache = self.offload.cache
        total = 0
        for key in cache.keys():
            assert isinstance(key, tuple)
            pair = cache.peek(key) if key[0] == self.layer else None
            if pair is not None:
                total += _size(pair)
        return total


def _predictor(block: MoEBlock, limit: int | None) -> Callable[[torch.Tensor], list[int]]:
    """The experts ``block``'s router picks for ``x`` (for several tokens: the ``limit`` picked
    most often), computed as its forward routes."""
    n = limit if limit is not None else block.top_k

    def predict(x: torch.Tensor) -> list[int]:
        flat = x.reshape(-1, x.shape[-1])
        scores = torch.mm(flat.float(), block.gate_w).sigmoid_()
        idx = select_experts(
            scores,
            block.gate_bias,
            top_k=block.top_k,
            n_group=block.n_group,
            topk_group=block.topk_group,
        )
        if flat.shape[0] == 1 and n >= block.top_k:
            ids: list[int] = idx[0].tolist()
            return ids
        counts = torch.bincount(idx.reshape(-1), minlength=block.n_experts)
        top = torch.topk(counts, min(n, block.n_experts))
        return [int(e) for e, c in zip(top.indices.tolist(), top.values.tolist(), strict=True) if c]

    return predict


# --------------------------------------------------------------------------------------------------
# Wiring into a model

_OFFLOADS: weakref.WeakKeyDictionary[torch.nn.Module, ExpertOffload] = weakref.WeakKeyDictionary()


def expert_offload(model: MoEForCausalLM) -> ExpertOffload:
    """The :class:`ExpertOffload` serving ``model``'s experts (its stats, cache, ``close``)."""
    try:
        return _OFFLOADS[model]
    except KeyError:
        raise ValueError("this model's experts are not offloaded") from None


def _moe_blocks(model: MoEForCausalLM) -> list[tuple[int, MoEBlock]]:
    out = []
    for i, layer in enumerate(model.layers):
        mlp = getattr(layer, "mlp", None)
        if isinstance(mlp, MoEBlock):
            out.append((i, mlp))
    return out


def attach_offload(
    model: MoEForCausalLM, path: str | os.PathLike[str], config: OffloadConfig
) -> ExpertOffload:
    """Serve ``model``'s routed experts from the checkpoint at ``path`` (the one it came from, or
    any with the same expert weights): every MoE layer gets an :class:`OffloadedExpertBank`, its
    stacked expert parameters are released, and the layers are chained for prefetching."""
    blocks = _moe_blocks(model)
    if not blocks:
        raise OffloadError("the model has no MoE layers to offload")
    ckpt = MappedSafetensors(config.experts_dir if config.experts_dir is not None else path)
    quantization = _quantization(Path(path))
    offload = ExpertOffload(ckpt, config, dtype=model.dtype, device=model.device)
    prev: OffloadedExpertBank | None = None
    for i, block in blocks:
        fmt = detect_expert_format(ckpt, f"model.layers.{i}.mlp.experts.0.", quantization)
        bank = OffloadedExpertBank(
            offload, i, block.n_experts, fmt, _predictor(block, config.prefetch_max)
        )
        missing = [k for e in range(bank.n_experts) for k in bank.keys(e) if k not in ckpt]
        if missing:
            raise OffloadError(
                f"{ckpt.root} lacks {len(missing)} routed expert tensors of layer {i} "
                f"(e.g. {missing[0]})"
            )
        if prev is not None:
            prev.next = bank
        prev = bank
        offload.banks.append(bank)
    if config.source == "ram":
        offload._use_ram()
    for (_, block), bank in zip(blocks, offload.banks, strict=True):
        block.set_bank(bank)  # the stacked expert parameters become shape-only (meta)
    model.refresh()
    _OFFLOADS[model] = offload
    return offload


def load_offloaded(
    path: str | os.PathLike[str],
    offload: OffloadConfig | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> MoEForCausalLM:
    """A model from the checkpoint directory ``path`` whose routed experts stay in the checkpoint
    (see :class:`OffloadConfig`); every other weight is read into memory. Memory needed: the
    non-expert weights plus the expert budget, never the whole model."""
    from .checkpoint import CheckpointError
    from .fp8 import DEFAULT_BLOCK_SIZE, dequantize_fp8_blockwise
    from .transformer import MoEForCausalLM

    config = offload or OffloadConfig()
    root = Path(path)
    model_config = checkpoint_config(root)
    target = torch.device(device)
    model = MoEForCausalLM(
        model_config, dtype=dtype, device=target, init="meta", grouped_experts=False
    )
    # Real storage for everything but the stacked routed experts (those stay meta).
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if p.is_meta and not (isinstance(module, MoEBlock) and name in ("w13", "w2")):
                fresh = empty_weight(tuple(p.shape), p.dtype, target, tuple(p.stride()))
                setattr(module, name, torch.nn.Parameter(fresh, requires_grad=False))
    model.refresh()
    qc = model_config.quantization_config or {}
    block = tuple(qc.get("weight_block_size") or DEFAULT_BLOCK_SIZE)
    ckpt = MappedSafetensors(root)
    try:
        resident = {k: v for k, v in model.hf_parameter_shapes().items() if _EXPERT_KEY not in k}
        # Every problem is found before any tensor is read: a wrong checkpoint costs no I/O.
        problems: list[str] = []
        for key, shape in resident.items():
            if key not in ckpt:
                problems.append(f"missing tensor {key}: expected shape {list(shape)}")
            elif ckpt.shape(key) != shape:
                problems.append(
                    f"{key}: expected shape {list(shape)}, found {list(ckpt.shape(key))}"
                )
        if problems:
            raise CheckpointError(f"checkpoint {root} does not fit the model", problems)
        for key in resident:
            tensor = ckpt.view(key)
            if key + "_scale_inv" in ckpt:
                tensor = dequantize_fp8_blockwise(
                    tensor.to(target),
                    ckpt.view(key + "_scale_inv").to(target),
                    (int(block[0]), int(block[1])),
                    dtype=torch.float32,
                )
            model.load_hf_tensor(key, tensor)
    finally:
        ckpt.close()
    attach_offload(model, root, config)
    model.eval()
    return model
