"""The fused CPU decode step: one token's pass through the model (every decoder layer, the final
norm and the lm_head) in one native call.

A decode step on CPU is a few hundred small operations per token (norms, projections, the
attention over the latent cache, routing, one GEMV pair per expert); run one by one from Python
they cost more time between the products than the products themselves take on a small model.
``decode_step.c`` (built into the same library as :mod:`.cpu_kernels`) runs them all for one
token of one sequence, from the embedded row to fp32 logits: this module describes each layer's
weights once (pointers, shapes and storage formats, kept in a :class:`DecodePlan`) and calls it
per step. With several threads, the kernels split each product's rows, the attention splits the
cached rows on long contexts, and the MoE splits whole experts between threads.

What it covers: fp32 and bf16 models on CPU with the native kernels on, absorbed attention, dense
MLPs, MoE blocks with stacked experts or a resident bank of dense, FP8-block or INT4 (native
layout) experts and dense, FP8 or INT4 shared experts. Anything else (INT8 or offloaded experts,
router statistics on, grouped expert GEMMs chosen, the expanded attention path forced, padded
batches, more than one token) is left to the layer-by-layer path, which computes the same values:
:func:`decode_plan` returns ``None`` for a model it cannot describe. Results equal that path up
to the order of fp32 sums (bf16 values are rounded at the same points, except that experts run
on several threads are summed in fp32 and rounded once; tests compare both).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, cast

import torch

from . import cpu_kernels
from .experts import DenseExpertLinear, ExpertLinear, ResidentExpertBank
from .mla import MLAttention
from .moe import DenseMLP, MoEBlock
from .quant import Fp8BlockLinear, Int4Linear, StackedRows

if TYPE_CHECKING:
    from .cache import LatentCache
    from .transformer import MoEForCausalLM

__all__ = ["DecodePlan", "decode_plan", "fused_decode"]

log = logging.getLogger(__name__)
_switch = cpu_kernels.Switch()


def fused_decode(on: bool) -> AbstractContextManager[None]:
    """Use (``True``, the default) or bypass (``False``) the fused step inside the block,
    process-wide: e.g. ``with fused_decode(False):`` decodes layer by layer (same kernels)."""
    return _switch.setting(on)


_I64 = ctypes.c_int64
_P = ctypes.c_void_p
_D = ctypes.c_double

_MAX_WIDTH = 4096  # decode_step.c's MAX_WIDTH: the widest latent cache row it attends over

# Matrix formats of decode_step.c's ar_mat
_F32, _F32T, _BF16, _FP8, _INT4, _STACK = 0, 1, 2, 3, 4, 5


class _Mat(ctypes.Structure):
    _fields_ = [
        ("fmt", _I64),
        ("out", _I64),
        ("inp", _I64),
        ("ldw", _I64),
        ("lds", _I64),
        ("bh", _I64),
        ("bw", _I64),
        ("w", _P),
        ("scale", _P),
    ]


class _Layer(ctypes.Structure):
    _fields_ = [
        ("bf16", _I64),
        ("hidden", _I64),
        ("heads", _I64),
        ("nope", _I64),
        ("rope", _I64),
        ("v_dim", _I64),
        ("kv_lora", _I64),
        ("q_lora", _I64),
        ("q_in", _I64),
        ("qk_dim", _I64),
        ("eps", _D),
        ("scale", _D),
        ("attn_norm", _P),
        ("mlp_norm", _P),
        ("q_norm", _P),
        ("kv_norm", _P),
        ("w_a", _Mat),
        ("w_qb", _Mat),
        ("w_o", _Mat),
        ("wk", _P),
        ("wv", _P),
        ("wk_bf16", _I64),
        ("wk_stride", _I64),
        ("wk_ld", _I64),
        ("wv_bf16", _I64),
        ("wv_stride", _I64),
        ("wv_ld", _I64),
        ("moe", _I64),
        ("has_shared", _I64),
        ("mlp_inter", _I64),
        ("mlp13", _Mat),
        ("mlp2", _Mat),
        ("n_experts", _I64),
        ("top_k", _I64),
        ("n_group", _I64),
        ("topk_group", _I64),
        ("inter", _I64),
        ("norm_topk", _I64),
        ("scaling", _D),
        ("gate", _Mat),
        ("gate_bias", _P),
        ("w13", _P),
        ("w2", _P),
    ]


class _Step(ctypes.Structure):
    _fields_ = [
        ("n_layers", _I64),
        ("layers", _P),
        ("x", _P),
        ("caches", _P),
        ("pos", _I64),
        ("cos", _P),
        ("sin", _P),
        ("rope_bf16", _I64),
        ("interleave", _I64),
        ("bf16", _I64),
        ("final_norm", _P),
        ("eps", _D),
        ("lm_head", _Mat),
        ("logits", _P),
    ]


class _Unsupported(Exception):
    """A weight or layer the fused step does not describe (the layer path runs instead)."""


def _float_flag(t: torch.Tensor) -> int:
    if t.dtype == torch.bfloat16:
        return 1
    if t.dtype == torch.float32:
        return 0
    raise _Unsupported(f"dtype {t.dtype}")


def _projection(w: torch.Tensor) -> _Mat:
    """A weight seen as ``[in, out]`` (``x @ w``), in either layout :func:`.cpu_kernels.xw` reads
    (:func:`.cpu_kernels.weight_layout`)."""
    layout = cpu_kernels.weight_layout(w) if w.dim() == 2 and w.is_cpu else None
    if layout is None:
        raise _Unsupported(f"projection layout {w.stride()}")
    n_in, n_out = w.shape
    kind, ld = layout
    fmt = _F32T if kind == "axpy" else _BF16 if w.dtype == torch.bfloat16 else _F32
    return _Mat(fmt, n_out, n_in, ld, 0, 0, 0, w.data_ptr(), None)


def _expert(lin: ExpertLinear, keep: list[Any]) -> _Mat:
    """One expert projection (``[out, in]``, ``x @ W.T``) in a format the native kernels read
    (``keep`` receives what the description points into besides the weights)."""
    if isinstance(lin, StackedRows):
        parts = (_Mat * len(lin.parts))(*(_expert(p, keep) for p in lin.parts))
        keep.append(parts)
        return _Mat(
            _STACK, lin.out_features, lin.in_features, 0, len(lin.parts), 0, 0,
            ctypes.addressof(parts), None,
        )  # fmt: skip
    if isinstance(lin, DenseExpertLinear):
        return _projection(lin.weight.t())
    if isinstance(lin, Fp8BlockLinear):
        w, s = lin.weight, lin.scale_inv
        if not (lin._finite and w.is_cpu and w.is_contiguous() and s.is_contiguous()):
            raise _Unsupported("FP8 weight")
        bh, bw = lin.block
        return _Mat(
            _FP8, lin.out_features, lin.in_features, lin.in_features, s.shape[1], bh, bw,
            w.data_ptr(), s.data_ptr(),
        )  # fmt: skip
    if isinstance(lin, Int4Linear) and lin.layout == "native":
        packed, scale = lin.packed, lin.scale
        groups = packed.shape[1] // 16
        if not (packed.is_cpu and scale.is_contiguous() and scale.shape[1] == groups):
            raise _Unsupported("INT4 weight")
        return _Mat(
            _INT4, lin.out_features, lin.in_features, packed.shape[1], groups,
            int(scale.dtype == torch.bfloat16), 0, packed.data_ptr(), scale.data_ptr(),
        )  # fmt: skip
    raise _Unsupported(type(lin).__name__)


def _per_head(w: torch.Tensor) -> tuple[int, int, int, int]:
    """(data pointer, bf16 flag, head stride, row stride) of per-head weights ``[B, in, out]``
    with each head's matrix stored ``[out, in]`` (what ``ar_gemv_batched`` reads, see
    :func:`.cpu_kernels.bxw`)."""
    layout = cpu_kernels.weight_layout(w)
    if layout is None or layout[0] != "dot":
        raise _Unsupported("per-head layout")
    return w.data_ptr(), _float_flag(w), w.stride(0), layout[1]


class DecodePlan:
    """The described layers, final norm and lm_head of one model (and the descriptions they point
    into, kept alive), valid while the model's weight views are the ones it was built from
    (``key``, compared by :func:`decode_plan` on every step)."""

    def __init__(self, model: MoEForCausalLM, key: tuple[Any, ...]) -> None:
        self._keep: list[Any] = []
        self.key = key  # (held: the objects it names stay alive, so identities stay unique)
        layers = [self._layer(model, i) for i in range(len(model.layers))]
        self._layers = (_Layer * len(layers))(*layers)
        if model.norm.dtype != model.dtype or not model.norm.is_contiguous():
            raise _Unsupported("final norm")
        self.vocab = model.config.vocab_size
        self._step = _Step(
            n_layers=len(layers),
            layers=ctypes.addressof(self._layers),
            interleave=int(model.config.rope_interleave),
            bf16=_float_flag(model.norm),
            final_norm=model.norm.data_ptr(),
            eps=model.config.rms_norm_eps,
            lm_head=_projection(model.lm_head.t()),
        )
        self.broken = False

    def __deepcopy__(self, memo: dict[int, Any]) -> None:
        return None  # a copied model's weights live elsewhere: it builds its own plan

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _no_plan, ()  # pickled (torch.save of a model) as "none yet", for the same reason

    def _layer(self, model: MoEForCausalLM, index: int) -> _Layer:
        from .transformer import DecoderLayer

        layer = model.layers[index]
        assert isinstance(layer, DecoderLayer)
        attn = layer.attn
        w_a, q_norm, w_qb, kv_norm, _, _, w_o, native_k, native_vt = attn._weight_views()
        if attn.kv_lora + attn.rope > _MAX_WIDTH:
            raise _Unsupported("latent cache row wider than the native step's buffer")
        wk = _per_head(native_k)
        wv = _per_head(native_vt)
        out = _Layer(
            bf16=_float_flag(layer.attn_norm),
            hidden=model.config.hidden_size,
            heads=attn.heads,
            nope=attn.nope,
            rope=attn.rope,
            v_dim=attn.v_dim,
            kv_lora=attn.kv_lora,
            q_lora=attn.q_lora or 0,
            q_in=attn.q_in,
            qk_dim=attn.qk_dim,
            eps=attn.eps,
            scale=attn.scale,
            attn_norm=layer.attn_norm.data_ptr(),
            mlp_norm=layer.mlp_norm.data_ptr(),
            q_norm=q_norm.data_ptr(),
            kv_norm=kv_norm.data_ptr(),
            w_a=_projection(w_a),
            w_qb=_projection(w_qb),
            w_o=_projection(w_o),
            wk=wk[0],
            wk_bf16=wk[1],
            wk_stride=wk[2],
            wk_ld=wk[3],
            wv=wv[0],
            wv_bf16=wv[1],
            wv_stride=wv[2],
            wv_ld=wv[3],
        )
        if layer.attn_norm.dtype != model.dtype or not layer.attn_norm.is_contiguous():
            raise _Unsupported("norm weights")
        mlp = layer.mlp
        if isinstance(mlp, DenseMLP):
            self._dense(out, mlp)
        else:
            self._moe(out, mlp)
        return out

    def _dense(self, out: _Layer, mlp: DenseMLP) -> None:
        out.moe = 0
        out.mlp_inter = mlp.inter
        out.mlp13 = _projection(mlp.w13.data)
        out.mlp2 = _projection(mlp.w2.data)

    def _moe(self, out: _Layer, mlp: MoEBlock) -> None:
        if mlp.top_k > 64 or mlp.n_group > 256 or mlp.n_experts % max(mlp.n_group, 1):
            raise _Unsupported("routing shape")
        out.moe = 1
        out.n_experts, out.top_k, out.inter = mlp.n_experts, mlp.top_k, mlp.inter
        out.n_group, out.topk_group = mlp.n_group, mlp.topk_group
        out.norm_topk, out.scaling = int(mlp.norm_topk_prob), mlp.scaling
        out.gate = _projection(mlp.gate_w.data)
        bias = mlp.gate_bias.data
        if bias.dtype != torch.float32 or not bias.is_contiguous():
            raise _Unsupported("router bias")
        out.gate_bias = bias.data_ptr()
        if mlp.bank is not None:
            if not isinstance(mlp.bank, ResidentExpertBank):
                raise _Unsupported("offloaded experts")
            gate_ups = [_expert(gu, self._keep) for gu, _ in mlp.bank.experts]
            downs = [_expert(d, self._keep) for _, d in mlp.bank.experts]
        else:
            w13, w2 = mlp._expert_views()
            gate_ups = [_projection(w) for w in w13]
            downs = [_projection(w) for w in w2]
        self._experts(out, gate_ups, downs)
        if mlp.shared_pair is not None:
            gu, down = mlp.shared_pair
            out.has_shared, out.mlp_inter = 1, gu.out_features // 2
            out.mlp13, out.mlp2 = _expert(gu, self._keep), _expert(down, self._keep)
        elif mlp.shared is not None:
            out.has_shared = 1
            self._dense(out, mlp.shared)
            out.moe = 1
        else:
            out.has_shared = 0

    def _experts(self, out: _Layer, gate_ups: Sequence[_Mat], downs: Sequence[_Mat]) -> None:
        arr13 = (_Mat * len(gate_ups))(*gate_ups)
        arr2 = (_Mat * len(downs))(*downs)
        self._keep += [arr13, arr2]
        out.w13 = ctypes.addressof(arr13)
        out.w2 = ctypes.addressof(arr2)

    def run(
        self, x: torch.Tensor, cache: LatentCache, pos: int, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor | None:
        """Every layer, the final norm and the lm_head for the one token ``x`` ([1, 1, H], the
        model dtype, contiguous; used as scratch) at position ``pos`` with its rotary ``cos`` and
        ``sin`` (rope/2 values each): its logits [1, 1, vocab] in fp32. ``None`` where it cannot
        run (the caller takes the layer path; ``x`` is then as it was): a layout it does not
        read, or the native step failing (an allocation, a kernel refusing a shape), which also
        marks the plan broken so the model keeps to the layer path."""
        lib = cpu_kernels.library()
        if lib is None or not x.is_contiguous():
            return None
        ptrs = []
        for t in cache.layers:
            if t.shape[0] != 1 or t.stride(2) != 1 or t.stride(1) != t.shape[2]:
                return None
            ptrs.append(t.data_ptr())
        if cos.stride(-1) != 1 or sin.stride(-1) != 1 or cos.dtype != sin.dtype:
            return None
        caches = (_P * len(ptrs))(*ptrs)
        logits = torch.empty(1, 1, self.vocab, dtype=torch.float32)
        # A copy of the plan's template per call: threads may decode other sequences of the same
        # model at the same time (the native call releases the GIL).
        st = _Step.from_buffer_copy(self._step)
        st.x, st.caches, st.pos = x.data_ptr(), ctypes.addressof(caches), pos
        st.cos, st.sin, st.rope_bf16 = cos.data_ptr(), sin.data_ptr(), _float_flag(cos)
        st.logits = logits.data_ptr()
        before = x.clone()
        rc = _entry(lib)(ctypes.byref(st), torch.get_num_threads())
        if rc == 0:
            return logits
        x.copy_(before)
        self.broken = True
        log.warning("fused decode step failed (code %d); using the layer path", rc)
        return None


def _no_plan() -> None:
    return None


def _entry(lib: ctypes.CDLL) -> Any:
    fn = lib.ar_decode_step
    if fn.argtypes is None:
        fn.argtypes = [ctypes.POINTER(_Step), ctypes.c_int]
        fn.restype = ctypes.c_int
    return fn


def _identity(model: MoEForCausalLM) -> tuple[Any, ...] | None:
    """What a plan's pointers were taken from: each layer's cached attention weight views, its
    expert views or bank (rebuilt, as new objects, when the weights change) and the data
    pointers of its dense MLP, the final norm and the lm_head; ``None`` while router statistics
    are on (they count in the layer path), the grouped expert GEMMs were chosen, or the expanded
    attention is forced. Checked on every step, so it reads the modules' dicts directly
    (``nn.Module`` attribute lookup costs a microsecond each)."""
    parts: list[Any] = [_pointers(model, "lm_head", "norm")]
    for layer in model.layers:
        attn, mlp = layer._modules["attn"], layer._modules["mlp"]
        assert isinstance(attn, MLAttention)
        if attn.path == "expanded":
            return None  # forced (tests): the fused step computes the absorbed form
        parts.append(attn._weights if attn._weights is not None else attn._weight_views())
        if isinstance(mlp, DenseMLP):
            parts.append(_pointers(mlp, "w13", "w2"))
            continue
        assert isinstance(mlp, MoEBlock)
        if mlp.load_counts is not None or mlp.grouped:
            return None  # statistics count, and the grouped GEMMs run, in the layer path
        if mlp.bank is not None:
            parts += [mlp.bank, mlp.shared_pair]
            continue
        views = mlp._views
        if views is None or views[0] != _pointers(mlp, "w13", "w2", "gate_w"):
            mlp._expert_views()  # rebuilt for the new storage
        parts.append(mlp._views)
    return tuple(parts)


class _Pointers(tuple[int, ...]):
    """Data pointers in a plan's key (compared by value; everything else by identity)."""


def _pointers(module: torch.nn.Module, *names: str) -> _Pointers:
    params = module._parameters
    return _Pointers(cast(torch.Tensor, params[n]).data_ptr() for n in names)


def _same(a: tuple[Any, ...], b: tuple[Any, ...] | None) -> bool:
    if b is None or len(a) != len(b):
        return False
    return all(
        x is y or (isinstance(x, _Pointers) and isinstance(y, _Pointers) and x == y)
        for x, y in zip(a, b, strict=True)
    )


def decode_plan(model: MoEForCausalLM) -> DecodePlan | None:
    """The fused step for ``model`` as it is now, or ``None`` where it does not apply (see the
    module docstring). The model keeps the last answer in ``_decode_plan`` (a plan, or the key of
    a model found unsupported), checked against its weight views on every call."""
    if not _switch.on or model.device.type != "cpu" or not cpu_kernels.enabled():
        return None
    key = _identity(model)
    if key is None:
        return None
    cached = model._decode_plan
    if isinstance(cached, DecodePlan):
        if not cached.broken and _same(cached.key, key):
            return cached
    elif cached is not None and _same(cached, key):
        return None
    try:
        plan = DecodePlan(model, key)
    except _Unsupported as exc:
        log.debug("fused decode step not used: %s", exc)
        model._decode_plan = key
        return None
    model._decode_plan = plan
    return plan
