"""Load and save Hugging Face safetensors checkpoints of DeepSeek-V3 / Kimi K2 models.

The on-disk layout is the one the released checkpoints and ``transformers`` use: a ``config.json``
and either one ``model.safetensors`` or shards listed by ``model.safetensors.index.json``, with one
key per expert (``model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight``). FP8 checkpoints carry
``X.weight_scale_inv`` beside each block-quantised ``X.weight``; those are dequantised on the way in
(see :mod:`.fp8`).

Loading is lazy: the files are memory-mapped, one tensor at a time is read, converted and copied
into the model, and each shard is unmapped once its last tensor is in. Peak memory is the model plus
one tensor (and the page cache of the shard being read), never a second full state dict. Every key and
shape is checked against a shapes-only model before the weights' memory is allocated or any data is
read, and all the problems are reported together: a wrong checkpoint costs one failed attempt, not one
per mistake.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from agent_runtime.errors import UserError

from .compressed_tensors import (
    PACKED_SUFFIX,
    SCALE_SUFFIX,
    SHAPE_SUFFIX,
    PackQuantizedScheme,
    check_packed_shapes,
    dequantize_packed,
    parse_pack_quantized,
    unpack_int4,
)
from .experts import ExpertLinear, ExpertPair, ResidentExpertBank
from .fp8 import (
    DEFAULT_BLOCK_SIZE,
    dequantize_fp8_blockwise,
    is_fp8_quantisable,
    quantize_fp8_blockwise,
    scale_grid_shape,
)

if TYPE_CHECKING:
    from .offload import OffloadConfig
    from .transformer import MoEForCausalLM

__all__ = [
    "CONFIG_NAME",
    "INDEX_NAME",
    "SINGLE_FILE_NAME",
    "CheckpointError",
    "ExpertStorage",
    "load_checkpoint",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
SINGLE_FILE_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
_SCALE_SUFFIX = "_scale_inv"
_MAX_REPORTED = 20
_FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
_SHARD_RE = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded into the model: each entry of ``problems`` names a key.

    Shape problems give the expected (model) and found (file) shapes. The message lists the first
    few problems; ``problems`` holds all of them.
    """

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        self.problems: list[str] = list(problems)
        if self.problems:
            shown = self.problems[:_MAX_REPORTED]
            lines = [message, *(f"  - {p}" for p in shown)]
            if len(self.problems) > len(shown):
                lines.append(f"  ... and {len(self.problems) - len(shown)} more")
            message = "\n".join(lines)
        super().__init__(message)


# --------------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class _TensorInfo:
    file: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype code, e.g. "BF16", "F8_E4M3"


class _SafetensorsDir:
    """An opened checkpoint directory: where each key lives, its shape and dtype, lazy reads.

    Only the headers are parsed when it opens; tensor data is read from the memory map on demand.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        index_path = root / INDEX_NAME
        single_path = root / SINGLE_FILE_NAME
        claimed: dict[str, str] = {}
        if index_path.is_file():
            try:
                index = json.loads(index_path.read_text(encoding="utf-8"))
                weight_map = index["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{index_path} is not a safetensors index: {exc}") from exc
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index_path} has an empty or malformed weight_map")
            claimed = {str(k): str(v) for k, v in weight_map.items()}
            files = sorted(set(claimed.values()))
        elif single_path.is_file():
            files = [SINGLE_FILE_NAME]
        else:
            raise CheckpointError(
                f"{root} holds neither {SINGLE_FILE_NAME} nor {INDEX_NAME}; "
                "expected a Hugging Face safetensors checkpoint directory"
            )
        missing_files = [f for f in files if not (root / f).is_file()]
        if missing_files:
            raise CheckpointError(
                f"{index_path} lists shard files that do not exist in {root}",
                [f"missing shard file {f}" for f in missing_files],
            )
        self._handles: dict[str, Any] = {}
        self.tensors: dict[str, _TensorInfo] = {}
        self.problems: list[str] = []
        try:
            self._scan(files, claimed)
        except BaseException:
            self.close()
            raise

    def _scan(self, files: list[str], claimed: dict[str, str]) -> None:
        root = self.root
        for name in files:
            try:
                handle: Any = safe_open(str(root / name), framework="pt")
                handle.__enter__()
            except Exception as exc:  # safetensors raises its own error types for corrupt headers
                raise CheckpointError(f"cannot open {root / name}: {exc}") from exc
            self._handles[name] = handle
            for key in handle.keys():
                info = handle.get_slice(key)
                entry = _TensorInfo(name, tuple(int(d) for d in info.get_shape()), info.get_dtype())
                if key in self.tensors:
                    self.problems.append(
                        f"{key} is stored twice ({self.tensors[key].file} and {name})"
                    )
                self.tensors[key] = entry
        for key, name in claimed.items():
            if key not in self.tensors:
                self.problems.append(f"{key}: the index maps it to {name}, which does not hold it")
            elif self.tensors[key].file != name:
                self.problems.append(
                    f"{key}: the index maps it to {name} but it is in {self.tensors[key].file}"
                )

    def read(self, key: str) -> torch.Tensor:
        tensor: torch.Tensor = self._handles[self.tensors[key].file].get_tensor(key)
        return tensor

    def release(self, name: str) -> None:
        """Unmap one file once nothing more is read from it (keeps resident memory to one shard)."""
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.__exit__(None, None, None)

    def close(self) -> None:
        for name in list(self._handles):
            self.release(name)

    def __enter__(self) -> _SafetensorsDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fp8_block_size(config: Mapping[str, Any]) -> tuple[int, int] | None:
    """The FP8 block size from ``quantization_config``, or ``None`` for a checkpoint without FP8
    blocks (unquantised, or compressed-tensors: see :func:`_pack_quantized`)."""
    qc = config.get("quantization_config")
    if qc is None:
        return None
    if not isinstance(qc, Mapping):
        raise CheckpointError(f"quantization_config must be an object, got {qc!r}")
    method = qc.get("quant_method")
    if method == "compressed-tensors":
        return None
    if method != "fp8":
        raise CheckpointError(
            f"quantization_config.quant_method {method!r} is not supported; only block-wise "
            "'fp8' and 'compressed-tensors' (pack-quantized INT4)"
        )
    fmt = qc.get("fmt", "e4m3")
    if fmt != "e4m3":
        raise CheckpointError(f"quantization_config.fmt {fmt!r} is not supported; only 'e4m3'")
    scheme = qc.get("activation_scheme", "dynamic")
    if scheme != "dynamic":
        # Static activation scales add input_scale tensors this loader does not apply.
        raise CheckpointError(
            f"quantization_config.activation_scheme {scheme!r} is not supported; only 'dynamic'"
        )
    block = qc.get("weight_block_size") or list(DEFAULT_BLOCK_SIZE)
    if (
        not isinstance(block, Sequence)
        or len(block) != 2
        or not all(isinstance(b, int) and b > 0 for b in block)
    ):
        raise CheckpointError(
            f"quantization_config.weight_block_size must be two positive integers, got {block!r}"
        )
    return int(block[0]), int(block[1])


def _pack_quantized(config: Mapping[str, Any]) -> PackQuantizedScheme | None:
    """The INT4 scheme of a compressed-tensors checkpoint, or ``None`` for any other."""
    qc = config.get("quantization_config")
    if not isinstance(qc, Mapping) or qc.get("quant_method") != "compressed-tensors":
        return None
    try:
        return parse_pack_quantized(qc)
    except ValueError as exc:
        raise CheckpointError(f"unsupported compressed-tensors checkpoint: {exc}") from exc


@dataclass(frozen=True)
class _Load:
    key: str
    scale_key: str | None
    packed_key: str | None = None  # compressed-tensors INT4: X.weight_packed (+ _scale, _shape)


def _plan_loads(
    ckpt: _SafetensorsDir,
    expected: Mapping[str, tuple[int, ...]],
    is_ignored: Callable[[str], bool],
    block: tuple[int, int] | None,
    int4: PackQuantizedScheme | None = None,
) -> tuple[list[_Load], list[str], list[str]]:
    """Match the checkpoint's keys to the model's; returns (loads, problems, skipped keys)."""
    problems = list(ckpt.problems)
    loads: list[_Load] = []
    skipped: list[str] = []
    found = ckpt.tensors
    packed_for: set[str] = set()
    if int4 is not None:
        loads, packed_for = _plan_packed(ckpt, expected, is_ignored, int4, problems, skipped)
    for key in sorted(found):
        info = found[key]
        if int4 is not None and key.endswith((_CT_PACKED, _CT_SCALE, _CT_SHAPE)):
            continue  # planned above
        if key.endswith(_SCALE_SUFFIX):
            base = key[: -len(_SCALE_SUFFIX)]
            if base not in found and not is_ignored(base) and not is_ignored(key):
                problems.append(f"unexpected tensor {key} {list(info.shape)}: no {base} beside it")
            continue
        if is_ignored(key):
            skipped.append(key)
            continue
        if key not in expected:
            problems.append(
                f"unexpected tensor {key} {list(info.shape)}: the model has no such key"
            )
            continue
        want = tuple(expected[key])
        if info.shape != want:
            problems.append(f"{key}: expected shape {list(want)}, found {list(info.shape)}")
            continue
        scale_key = key + _SCALE_SUFFIX
        if scale_key in found:
            scale = found[scale_key]
            grid_block = block or DEFAULT_BLOCK_SIZE
            try:
                grid = scale_grid_shape(info.shape, grid_block)
            except ValueError as exc:
                problems.append(f"{scale_key}: {exc}")
                continue
            if scale.shape != grid:
                problems.append(
                    f"{scale_key}: expected shape {list(grid)} (blocks of {list(grid_block)} over "
                    f"{list(info.shape)}), found {list(scale.shape)}"
                )
                continue
            loads.append(_Load(key, scale_key))
        elif info.dtype.startswith("F8"):
            problems.append(
                f"{key} is stored as {info.dtype} but has no {scale_key} to dequantise it with"
            )
        elif info.dtype not in ("F64", "F32", "F16", "BF16"):
            problems.append(f"{key} has dtype {info.dtype}; a floating-point weight is expected")
        else:
            loads.append(_Load(key, None))
    for key in sorted(set(expected) - set(found) - packed_for):
        problems.append(f"missing tensor {key}: expected shape {list(expected[key])}")
    return loads, problems, skipped


_CT_PACKED = ".weight" + PACKED_SUFFIX
_CT_SCALE = ".weight" + SCALE_SUFFIX
_CT_SHAPE = ".weight" + SHAPE_SUFFIX


def _plan_packed(
    ckpt: _SafetensorsDir,
    expected: Mapping[str, tuple[int, ...]],
    is_ignored: Callable[[str], bool],
    scheme: PackQuantizedScheme,
    problems: list[str],
    skipped: list[str],
) -> tuple[list[_Load], set[str]]:
    """The compressed-tensors INT4 weights: (loads, the model keys they provide). Each
    ``X.weight_packed`` needs ``X.weight_scale`` and ``X.weight_shape`` fitting the model's
    ``X.weight`` in groups of the config's size; a stray scale or shape tensor is a problem."""
    found = ckpt.tensors
    loads: list[_Load] = []
    provided: set[str] = set()
    for key in sorted(found):
        if key.endswith((_CT_SCALE, _CT_SHAPE)):
            base = key.rsplit("_", 1)[0]
            if base + PACKED_SUFFIX not in found and not is_ignored(key):
                problems.append(f"unexpected tensor {key}: no {base}{PACKED_SUFFIX} beside it")
            continue
        if not key.endswith(_CT_PACKED):
            continue
        base = key[: -len(PACKED_SUFFIX)]
        if is_ignored(base):
            skipped.append(key)
            continue
        if base not in expected:
            problems.append(f"unexpected tensor {key}: the model has no {base}")
            continue
        if base in found:
            problems.append(f"{base} is stored both packed and unpacked")
            continue
        scale, shape = found.get(base + SCALE_SUFFIX), found.get(base + SHAPE_SUFFIX)
        stored: list[int] | None = None
        if shape is not None:
            stored = [int(d) for d in ckpt.read(base + SHAPE_SUFFIX).reshape(-1).tolist()]
        found_problems = check_packed_shapes(
            base,
            expected[base],
            found[key].shape,
            found[key].dtype,
            None if scale is None else scale.shape,
            stored,
            scheme.group_size,
        )
        if scale is not None and not scale.dtype.startswith(("F", "BF")):
            found_problems.append(
                f"{base}{SCALE_SUFFIX} has dtype {scale.dtype}; a float is expected"
            )
        problems.extend(found_problems)
        provided.add(base)
        if not found_problems:
            loads.append(_Load(base, base + SCALE_SUFFIX, packed_key=key))
    return loads, provided


def _read_config(root: Path) -> dict[str, Any]:
    config_path = root / CONFIG_NAME
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{root} has no {CONFIG_NAME}") from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {config_path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_path} must hold a JSON object")
    return raw


ExpertStorage = Literal["auto", "dense", "fp8", "int4"]

_EXPERT_KEY = re.compile(
    r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight$"
)


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    progress: bool = True,
    grouped_experts: bool | None = None,
    experts: ExpertStorage = "auto",
    offload: OffloadConfig | None = None,
) -> MoEForCausalLM:
    """Build a model from a Hugging Face checkpoint directory, reading one tensor at a time.

    ``dtype`` is the compute dtype of the model (the router stays in fp32 whatever it is); FP8
    weights are dequantised in fp32 and then cast to it. Keys of layers beyond
    ``num_hidden_layers`` (the multi-token-prediction layer DeepSeek-V3 and K2 ship) are skipped
    with a log message. ``grouped_experts`` forces the grouped-GEMM expert path on or off
    (default: on CUDA only). Raises :class:`CheckpointError` listing every missing, unexpected or
    mis-shaped tensor before reading any data.

    ``experts`` says how the routed experts are kept in memory: ``"dense"`` in ``dtype``;
    ``"fp8"`` as the checkpoint's FP8 blocks (an FP8 checkpoint only), ``"int4"`` as the
    checkpoint's INT4 groups (a compressed-tensors ``pack-quantized`` checkpoint only), computed
    per used expert per step (see :mod:`.quant`); ``"auto"`` keeps a compressed-tensors
    checkpoint's INT4 experts as INT4 and makes every other checkpoint's experts dense (for FP8
    that is the exact dequantise-at-load model: on CPUs without FP8 arithmetic, widening an FP8
    expert each step costs more than reading its dense copy).

    ``offload``: keep the routed experts in the checkpoint's files (memory-mapped) or in RAM,
    with a budget of ready experts and prefetching (see :mod:`.offload`); every other weight is
    read into memory. The experts keep the checkpoint's own format.
    """
    if offload is not None:
        from .offload import load_offloaded

        return load_offloaded(path, offload, dtype=dtype, device=device)
    from .config import MoEConfig
    from .transformer import MoEForCausalLM

    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise CheckpointError(
            f"dtype {dtype} is not supported; use torch.float32 or torch.bfloat16"
        )
    if experts not in ("auto", "dense", "fp8", "int4"):
        raise CheckpointError(f"experts={experts!r}: use 'auto', 'dense', 'fp8' or 'int4'")
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root} is not a checkpoint directory")
    raw_config = _read_config(root)
    block = _fp8_block_size(raw_config)
    int4 = _pack_quantized(raw_config)
    if experts == "auto":
        experts = "int4" if int4 is not None else "dense"
    if experts == "fp8" and block is None:
        raise CheckpointError(f"experts='fp8' needs an FP8 checkpoint; {root} is not one")
    if experts == "int4" and int4 is None:
        raise CheckpointError(
            f"experts='int4' needs a compressed-tensors pack-quantized checkpoint; {root} is not one"
        )
    if int4 is not None:  # handled here; MoEConfig describes FP8 checkpoints only
        raw_config = {k: v for k, v in raw_config.items() if k != "quantization_config"}
    try:
        config = MoEConfig.from_hf(raw_config)
    except ValueError as exc:
        raise CheckpointError(f"{root / CONFIG_NAME}: {exc}") from exc
    target = torch.device(device)

    with _SafetensorsDir(root) as ckpt:
        # Shapes only at first: a wrong checkpoint is reported before any memory is allocated.
        model = MoEForCausalLM(
            config, dtype=dtype, device=target, init="meta", grouped_experts=grouped_experts
        )
        loads, problems, skipped = _plan_loads(
            ckpt, model.hf_parameter_shapes(), model.is_ignored_hf_key, block, int4
        )
        if experts in ("fp8", "int4"):
            problems.extend(_kept_format_problems(loads, experts))
        if problems:
            raise CheckpointError(
                f"checkpoint {root} does not fit the model ({len(problems)} problems)", problems
            )
        if block is None and int4 is None and any(item.scale_key for item in loads):
            log.warning(
                "%s has weight_scale_inv tensors but no quantization_config; assuming FP8 blocks "
                "of %s",
                root,
                list(DEFAULT_BLOCK_SIZE),
            )
        # The stacked dense expert storage is allocated but never touched when experts stay in
        # their format (untouched pages cost no memory); set_bank then frees it.
        model.materialize(target)
        if skipped:
            log.info(
                "skipping %d checkpoint tensors the model does not use (e.g. %s)",
                len(skipped),
                skipped[0],
            )

        def files(item: _Load) -> list[str]:
            keys = [item.packed_key or item.key]
            if item.scale_key is not None:
                keys.append(item.scale_key)
            return [ckpt.tensors[k].file for k in keys]

        # Read file by file so each memory map is walked front to back.
        loads.sort(key=lambda item: (files(item)[0], item.key))
        last_use: dict[str, int] = {}
        for i, item in enumerate(loads):
            for name in files(item):
                last_use[name] = i
        done_after: dict[int, list[str]] = {}
        for name, i in last_use.items():
            done_after.setdefault(i, []).append(name)
        kept = _KeptExperts(config.moe_intermediate_size, block or DEFAULT_BLOCK_SIZE, int4)
        with tqdm(
            total=len(loads), desc="Loading checkpoint", unit="tensor", disable=not progress
        ) as bar:
            for index, item in enumerate(loads):
                keep = experts != "dense" and _EXPERT_KEY.match(item.key) is not None
                tensor = _read_load(ckpt, item, target, block, int4, keep)
                if keep:
                    kept.add(item.key, tensor)
                else:
                    assert isinstance(tensor, torch.Tensor)
                    model.load_hf_tensor(item.key, tensor)
                del tensor
                for name in done_after.get(index, ()):
                    ckpt.release(name)
                bar.update(1)
    kept.install(model)
    left = [k for k in model.missing_hf_keys() if k not in kept.keys]
    if left:  # cannot happen after a clean plan unless the model's bookkeeping disagrees
        raise CheckpointError(f"checkpoint {root} left parameters unset", left)
    model.eval()
    return model


_Part = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def _read_load(
    ckpt: _SafetensorsDir,
    item: _Load,
    target: torch.device,
    block: tuple[int, int] | None,
    int4: PackQuantizedScheme | None,
    keep: bool,
) -> _Part:
    """One planned weight: a float tensor, or (when ``keep``) its stored form: (fp8 weight,
    scale_inv) or (int4 values, scales)."""
    if item.packed_key is not None:
        assert int4 is not None and item.scale_key is not None
        packed, scale = ckpt.read(item.packed_key), ckpt.read(item.scale_key)
        shape = [int(d) for d in ckpt.read(item.key + SHAPE_SUFFIX).reshape(-1).tolist()]
        if keep:
            return unpack_int4(packed, shape).to(target), scale.to(target)
        return dequantize_packed(packed, scale, shape, int4.group_size)
    tensor = ckpt.read(item.key)
    if item.scale_key is None:
        return tensor
    scale = ckpt.read(item.scale_key)
    if target.type != "cpu":
        tensor, scale = tensor.to(target), scale.to(target)
    if keep:
        return tensor, scale.to(torch.float32)
    return dequantize_fp8_blockwise(tensor, scale, block or DEFAULT_BLOCK_SIZE, dtype=torch.float32)


def _kept_format_problems(loads: Sequence[_Load], experts: str) -> list[str]:
    """Routed experts that cannot stay in the asked format (stored as plain floats)."""
    problems = []
    for item in loads:
        if _EXPERT_KEY.match(item.key) is None:
            continue
        if experts == "fp8" and (item.scale_key is None or item.packed_key is not None):
            problems.append(f"{item.key} is not stored as FP8 blocks; experts='fp8' needs them")
        if experts == "int4" and item.packed_key is None:
            problems.append(f"{item.key} is not stored packed INT4; experts='int4' needs it")
    return problems


class _KeptExperts:
    """Collects routed-expert projections in their stored format while a checkpoint loads, then
    gives each MoE layer a resident bank of (gate_up, down) pairs."""

    def __init__(
        self,
        inter: int,
        block: tuple[int, int],
        int4: PackQuantizedScheme | None,
    ) -> None:
        self.inter = inter
        self.block = block
        self.int4 = int4
        self.keys: set[str] = set()
        self._parts: dict[tuple[int, int], dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}

    def add(self, key: str, part: _Part) -> None:
        m = _EXPERT_KEY.match(key)
        assert m is not None and isinstance(part, tuple)
        self._parts.setdefault((int(m.group(1)), int(m.group(2))), {})[m.group(3)] = part
        self.keys.add(key)

    def _linear(self, parts: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> ExpertLinear:
        from .quant import Fp8BlockLinear, Int4Linear, StackedRows

        if self.int4 is not None:
            q = torch.cat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
            s = torch.cat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
            return Int4Linear(q, s, self.int4.group_size)
        if len(parts) > 1 and all(p[0].shape[0] % self.block[0] == 0 for p in parts[:-1]):
            parts = [(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))]
        lins: list[ExpertLinear] = [Fp8BlockLinear(w, s, self.block) for w, s in parts]
        return lins[0] if len(lins) == 1 else StackedRows(lins)

    def install(self, model: MoEForCausalLM) -> None:
        from .moe import MoEBlock

        by_layer: dict[int, dict[int, ExpertPair]] = {}
        for (layer, e), parts in sorted(self._parts.items()):
            pair = (self._linear([parts["gate"], parts["up"]]), self._linear([parts["down"]]))
            by_layer.setdefault(layer, {})[e] = pair
        self._parts.clear()
        for layer, pairs in by_layer.items():
            block = model.layers[layer].mlp
            assert isinstance(block, MoEBlock) and len(pairs) == block.n_experts
            block.set_bank(ResidentExpertBank([pairs[e] for e in range(block.n_experts)]))
        if by_layer:
            model.refresh()


# --------------------------------------------------------------------------------------------------
# Saving


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _standalone(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """A contiguous CPU tensor in the wanted dtype, without a copy when none is needed.

    The model's views (one expert's slice of a stacked weight) are contiguous and never overlap,
    which safetensors accepts as is, so saving does not duplicate the weights in memory.
    """
    out = tensor.detach()
    if dtype is not None and out.is_floating_point() and out.dtype != dtype:
        out = out.to(dtype)
    return out.to("cpu").contiguous()


def _entries(
    items: Iterator[tuple[str, torch.Tensor]],
    dtype: torch.dtype | None,
    fp8_block: tuple[int, int] | None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors to write: cast, and block-quantised with their scales when FP8 is asked for."""
    for key, tensor in items:
        if fp8_block is not None and is_fp8_quantisable(key, tuple(tensor.shape)):
            weight, scale_inv = quantize_fp8_blockwise(tensor.detach().to("cpu"), fp8_block)
            yield key, weight
            yield key + _SCALE_SUFFIX, scale_inv
        else:
            yield key, _standalone(tensor, dtype)


def _state_items(model: MoEForCausalLM) -> Iterator[tuple[str, torch.Tensor]]:
    """The model's checkpoint-layout tensors; weights an expert bank holds (shape-only views in
    the model) are dequantised from the bank, in the model's dtype."""
    from .moe import MoEBlock

    for key, tensor in model.hf_state_items():
        if not tensor.is_meta:
            yield key, tensor
            continue
        parts = key.split(".")
        block = model.layers[int(parts[2])].mlp
        assert isinstance(block, MoEBlock)
        if parts[4] == "experts" and block.bank is not None:
            pair = block.bank.fetch([int(parts[5])], torch.empty(0))[0]
            name = parts[6]
        elif parts[4] == "shared_experts" and block.shared_pair is not None:
            pair, name = block.shared_pair, parts[5]
        else:
            raise ValueError(f"{key} holds no data and no expert bank provides it")
        if name == "down_proj":
            weight = pair[1].dequantize()
        else:
            gate_up = pair[0].dequantize()
            half = gate_up.shape[0] // 2
            weight = gate_up[:half] if name == "gate_proj" else gate_up[half:]
        yield key, weight.to(model.dtype)


def _iter_shards(
    entries: Iterator[tuple[str, torch.Tensor]], max_shard_bytes: int | None
) -> Iterator[dict[str, torch.Tensor]]:
    shard: dict[str, torch.Tensor] = {}
    size = 0
    for key, out in entries:
        nbytes = out.numel() * out.element_size()
        if shard and max_shard_bytes is not None and size + nbytes > max_shard_bytes:
            yield shard
            shard, size = {}, 0
        shard[key] = out
        size += nbytes
    if shard:
        yield shard


def save_checkpoint(
    model: MoEForCausalLM,
    path: str | os.PathLike[str],
    *,
    max_shard_bytes: int | None = None,
    dtype: torch.dtype | None = None,
    fp8_block_size: Sequence[int] | None = None,
    progress: bool = False,
) -> Path:
    """Write ``model`` as a Hugging Face checkpoint directory (the layout :func:`load_checkpoint` reads).

    One ``model.safetensors`` when everything fits in ``max_shard_bytes`` (or it is ``None``);
    otherwise ``model-0000i-of-0000n.safetensors`` shards plus ``model.safetensors.index.json``. A
    tensor larger than the limit gets a shard of its own. ``dtype`` casts floating tensors (e.g. save
    a fp32 model as bf16); by default each tensor keeps its dtype. ``fp8_block_size`` (e.g.
    ``(128, 128)``) writes the linear weights block-quantised to e4m3 with ``weight_scale_inv``
    and a ``quantization_config``, the layout DeepSeek-V3 and Kimi K2 ship; embeddings, lm_head,
    norms and the router stay unquantised. Earlier safetensors files of this layout in the
    directory are replaced. Returns the directory.
    """
    if max_shard_bytes is not None and max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    fp8_block = None
    if fp8_block_size is not None:
        if len(fp8_block_size) != 2 or any(int(b) <= 0 for b in fp8_block_size):
            raise ValueError(f"fp8_block_size must be two positive integers, got {fp8_block_size}")
        fp8_block = (int(fp8_block_size[0]), int(fp8_block_size[1]))
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.iterdir():
        if stale.name in (SINGLE_FILE_NAME, INDEX_NAME) or _SHARD_RE.match(stale.name):
            stale.unlink()

    written: list[tuple[Path, list[str]]] = []
    bytes_per_dtype: Counter[torch.dtype] = Counter()
    total_size = 0
    n_tensors = len(model.hf_parameter_shapes())
    # Shards are written under temporary names: their final names need the count, known at the end.
    try:
        with tqdm(
            total=n_tensors, desc="Saving checkpoint", unit="tensor", disable=not progress
        ) as bar:
            entries = _entries(_state_items(model), dtype, fp8_block)
            shards = _iter_shards(entries, max_shard_bytes)
            for i, shard in enumerate(shards):
                tmp = root / f".model-part-{i}.safetensors.tmp"
                written.append((tmp, list(shard)))
                save_file(shard, str(tmp), metadata={"format": "pt"})
                for t in shard.values():
                    nbytes = t.numel() * t.element_size()
                    total_size += nbytes
                    if t.is_floating_point() and t.dtype not in _FP8_DTYPES:
                        bytes_per_dtype[t.dtype] += nbytes
                bar.update(sum(1 for k in shard if not k.endswith(_SCALE_SUFFIX)))
                del shard
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise

    if len(written) == 1:
        written[0][0].replace(root / SINGLE_FILE_NAME)
    else:
        weight_map: dict[str, str] = {}
        n = len(written)
        for i, (tmp, keys) in enumerate(written):
            name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            tmp.replace(root / name)
            weight_map.update(dict.fromkeys(keys, name))
        index = {
            "metadata": {"total_size": total_size},
            "weight_map": dict(sorted(weight_map.items())),
        }
        (root / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")

    config = model.config.to_hf_dict()
    config.pop("quantization_config", None)  # describe what was written, not what was read
    if fp8_block is not None:
        config["quantization_config"] = {
            "quant_method": "fp8",
            "fmt": "e4m3",
            "activation_scheme": "dynamic",
            "weight_block_size": list(fp8_block),
        }
    main_dtype = dtype or (bytes_per_dtype.most_common(1)[0][0] if bytes_per_dtype else None)
    if main_dtype is not None:
        config["dtype"] = _dtype_name(main_dtype)
        config["torch_dtype"] = _dtype_name(main_dtype)
    (root / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return root
