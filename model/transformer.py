"""The causal LM: embedding, decoder layers (MLA + dense MLP or MoE), final norm, lm_head.

Weights are stored in the layout that is fastest to compute with (stacked experts, fused input
projections) and mapped to the checkpoint's per-tensor HF keys by :meth:`MoEForCausalLM._hf_targets`:
every HF key names a *view* into that storage, so loading copies each checkpoint tensor straight
into place and saving yields views, with no second copy of the model at any time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F

from . import cpu_kernels
from .cache import LatentCache
from .config import MoEConfig
from .cpu_kernels import xw
from .decode_step import DecodePlan, decode_plan
from .layers import RotaryTables, empty_weight, out_major, projection_strides, rms_norm
from .mla import AttentionPath, MLAttention, StepInfo
from .moe import DenseMLP, MoEBlock

__all__ = ["DecoderLayer", "MoEForCausalLM"]

InitMode = Literal["random", "empty", "meta"]
_MTP_KEY = re.compile(r"^model\.layers\.(\d+)\.")
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _row_major(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(math.prod(shape[i + 1 :]) for i in range(len(shape)))


def _lm_head_strides(
    config: MoEConfig, dtype: torch.dtype, device: torch.device | str
) -> tuple[int, ...] | None:
    """Strides of the lm_head ([vocab, hidden] as seen) in the layout :func:`out_major` prefers
    for ``hidden -> vocab``; ``None`` for [vocab, hidden] row-major."""
    if out_major(dtype, device, config.hidden_size, config.vocab_size) is False:
        return (1, config.vocab_size)
    return None


class DecoderLayer(torch.nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(x))."""

    def __init__(
        self,
        config: MoEConfig,
        index: int,
        *,
        dtype: torch.dtype,
        device: torch.device,
        grouped: bool = False,
    ) -> None:
        super().__init__()
        h = config.hidden_size
        self.eps = config.rms_norm_eps
        self.attn_norm = torch.nn.Parameter(
            torch.empty(h, dtype=dtype, device=device), requires_grad=False
        )
        self.mlp_norm = torch.nn.Parameter(
            torch.empty(h, dtype=dtype, device=device), requires_grad=False
        )
        self.attn = MLAttention(config, dtype=dtype, device=device)
        self.mlp: DenseMLP | MoEBlock
        if config.is_moe_layer(index):
            self.mlp = MoEBlock(config, dtype=dtype, device=device, grouped=grouped)
        else:
            self.mlp = DenseMLP(h, config.intermediate_size, dtype=dtype, device=device)

    def forward(
        self, x: torch.Tensor, step: StepInfo, cache: torch.Tensor, keep: int = 0
    ) -> torch.Tensor:
        """``keep`` > 0: only the last ``keep`` positions are computed past the attention's
        cache write and returned (see :meth:`MLAttention.forward`)."""
        # .forward directly: nn.Module.__call__'s hook handling is measurable per decode step.
        # Residual adds in place: ``x`` is owned by the forward (fresh from the embedding).
        attn = self.attn.forward(rms_norm(x, self.attn_norm, self.eps), step, cache, keep)
        if attn.shape[1] != x.shape[1]:
            x = x[:, x.shape[1] - attn.shape[1] :]
        x = x.add_(attn)
        return x.add_(self.mlp.forward(rms_norm(x, self.mlp_norm, self.eps)))


class MoEForCausalLM(torch.nn.Module):
    """DeepSeek-V3 / Kimi K2 for inference (no autograd), fp32 or bf16, CPU or CUDA."""

    def __init__(
        self,
        config: MoEConfig,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        init: InitMode = "random",
        seed: int = 0,
        grouped_experts: bool | None = None,
    ) -> None:
        """``grouped_experts``: run routed experts as grouped GEMMs (see :class:`MoEBlock`);
        ``None`` picks them on CUDA and the per-expert loops elsewhere."""
        super().__init__()
        if dtype not in _DTYPES:
            raise ValueError(f"unsupported model dtype {dtype}; use float32 or bfloat16")
        self.config = config
        self.dtype = dtype
        self.device = torch.device(device)
        alloc = torch.device("meta") if init == "meta" else self.device
        h = config.hidden_size
        self.embed = torch.nn.Parameter(
            empty_weight((config.vocab_size, h), dtype, alloc), requires_grad=False
        )
        # On CUDA the experts run as grouped GEMMs (see MoEBlock); on CPU as loops.
        if grouped_experts is None:
            grouped_experts = self.device.type == "cuda"
        grouped = grouped_experts and hasattr(F, "grouped_mm")
        self.layers = torch.nn.ModuleList(
            DecoderLayer(config, i, dtype=dtype, device=alloc, grouped=grouped)
            for i in range(config.num_hidden_layers)
        )
        self.norm = torch.nn.Parameter(
            torch.empty(h, dtype=dtype, device=alloc), requires_grad=False
        )
        # Seen [vocab, hidden] (the checkpoint layout, used through F.linear), unlike the other
        # projections; the decode GEMV over it is the single largest read per token, so it is
        # laid out as the kernels read fastest (bf16: [vocab, hidden]; fp32 on CPU: stored
        # [hidden, vocab], the wide-output axpy form, ~1.35x faster).
        self.lm_head = torch.nn.Parameter(
            empty_weight(
                (config.vocab_size, h), dtype, alloc, _lm_head_strides(config, dtype, alloc)
            ),
            requires_grad=False,
        )
        self._loaded: set[str] = set()
        self._targets: dict[str, torch.Tensor] | None = None
        # The fused CPU decode step (decode_step.decode_plan): a plan, the weight views a model
        # was found unsupported for, or None (not looked at since the views were last reset).
        self._decode_plan: DecodePlan | tuple[Any, ...] | None = None
        self.rotary = RotaryTables(config, dtype=dtype, device=self.device)
        if init == "random":
            self._random_init(seed)

    # ------------------------------------------------------------------ construction
    def _random_init(self, seed: int) -> None:
        """Normal(0, 0.02) matrices, unit norms, zero router bias: a small but real model."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        for key, target in self._hf_targets().items():
            if key.endswith("norm.weight"):
                target.fill_(1.0)
            elif key.endswith("e_score_correction_bias"):
                target.zero_()
            else:
                values = torch.empty(target.shape, dtype=torch.float32).normal_(
                    0.0, 0.02, generator=gen
                )
                target.copy_(values)
        self._loaded = set(self._hf_targets())

    def materialize(self, device: str | torch.device | None = None) -> None:
        """Give a model built with ``init="meta"`` real (uninitialised) storage."""
        dev = torch.device(device) if device is not None else self.device
        for module in self.modules():
            for name, p in list(module.named_parameters(recurse=False)):
                if p.is_meta:
                    # empty_strided keeps layouts such as the grouped-GEMM expert storage
                    fresh = empty_weight(tuple(p.shape), p.dtype, dev, tuple(p.stride()))
                    setattr(module, name, torch.nn.Parameter(fresh, requires_grad=False))
        self.device = dev
        self.rotary = RotaryTables(self.config, dtype=self.dtype, device=dev)
        self._targets = None
        self._reset_views()

    def _reset_views(self) -> None:
        for layer in self.layers:
            assert isinstance(layer, DecoderLayer)
            layer.attn.reset_views()
        self._targets = None
        self._decode_plan = None

    def _apply(
        self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
    ) -> MoEForCausalLM:
        """``.to(dtype)``, ``.to(device)``, ``.cuda()``, ``.bfloat16()``...: the weights follow,
        except the router (gate weight and bias), which only changes device and stays fp32; the
        model's ``dtype``, ``device`` and rotary tables are updated and views cached on the old
        storage dropped. A dtype the model cannot run in raises before anything is touched."""
        probe = fn(torch.empty(0, dtype=self.dtype, device=self.device))
        if probe.dtype not in _DTYPES:
            raise ValueError(f"cannot convert the model to {probe.dtype}; use float32 or bfloat16")
        router = {id(t) for t in self._router_tensors()}

        def convert(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=probe.device) if id(t) in router else fn(t)

        result: MoEForCausalLM = super()._apply(convert, recurse)  # type: ignore[no-untyped-call]
        if probe.dtype != self.dtype or probe.device != self.device:
            self.dtype = probe.dtype
            self.device = probe.device
            self.rotary = RotaryTables(self.config, dtype=self.dtype, device=self.device)
            self._relayout()
        self._reset_views()
        return result

    def _projections(self) -> Iterator[tuple[torch.nn.Module, str]]:
        """(module, parameter name) of every ``x @ W`` projection whose memory layout follows
        :func:`.layers.out_major` (grouped experts keep the layout their kernel needs)."""
        for layer in self.layers:
            assert isinstance(layer, DecoderLayer)
            a = layer.attn
            yield from ((a, n) for n in ("w_a", "w_qb", "w_o") if getattr(a, n) is not None)
            mlp = layer.mlp
            dense = mlp.shared if isinstance(mlp, MoEBlock) else mlp
            if isinstance(mlp, MoEBlock) and not mlp.grouped:
                yield from ((mlp, n) for n in ("w13", "w2"))
            if dense is not None:
                yield from ((dense, n) for n in ("w13", "w2"))

    def _relayout(self) -> None:
        """After a dtype or device change: re-lay every projection (and the lm_head) the way
        the kernels for the new dtype read fastest (same values, new strides)."""
        if out_major(self.dtype, self.device, 1, 1) is None:
            return  # no preference on this device: leave the layouts as they are
        wanted: list[tuple[torch.nn.Module, str, tuple[int, ...] | None]] = [
            (m, n, projection_strides(tuple(getattr(m, n).shape), self.dtype, self.device))
            for m, n in self._projections()
        ]
        wanted.append((self, "lm_head", _lm_head_strides(self.config, self.dtype, self.device)))
        for module, name, stride in wanted:
            p = getattr(module, name)
            want = stride if stride is not None else _row_major(tuple(p.shape))
            if tuple(p.stride()) == want:
                continue
            fresh = empty_weight(tuple(p.shape), p.dtype, p.device, want)
            fresh.copy_(p.data)
            setattr(module, name, torch.nn.Parameter(fresh, requires_grad=False))

    def _router_tensors(self) -> Iterator[torch.Tensor]:
        for layer in self.layers:
            assert isinstance(layer, DecoderLayer)
            if isinstance(layer.mlp, MoEBlock):
                yield layer.mlp.gate_w
                yield layer.mlp.gate_bias

    # ------------------------------------------------------------------ HF layout
    def _hf_targets(self) -> dict[str, torch.Tensor]:
        """HF key -> view of the storage that holds it."""
        if self._targets is not None:
            return self._targets
        c = self.config
        t: dict[str, torch.Tensor] = {"model.embed_tokens.weight": self.embed}
        for i, layer in enumerate(self.layers):
            assert isinstance(layer, DecoderLayer)
            p = f"model.layers.{i}."
            a = layer.attn
            t[p + "input_layernorm.weight"] = layer.attn_norm
            t[p + "post_attention_layernorm.weight"] = layer.mlp_norm
            sa = p + "self_attn."
            # Projections are stored [in, out]; the checkpoint's [out, in] is a transposed view.
            if a.q_lora is not None:
                assert a.q_norm is not None and a.w_qb is not None
                t[sa + "q_a_proj.weight"] = a.w_a[:, : a.q_lora].t()
                t[sa + "q_a_layernorm.weight"] = a.q_norm
                t[sa + "q_b_proj.weight"] = a.w_qb.t()
            else:
                t[sa + "q_proj.weight"] = a.w_a[:, : a.q_out].t()
            t[sa + "kv_a_proj_with_mqa.weight"] = a.w_a[:, a.q_in :].t()
            t[sa + "kv_a_layernorm.weight"] = a.kv_norm
            t[sa + "kv_b_proj.weight"] = a.w_kvb
            t[sa + "o_proj.weight"] = a.w_o.t()
            mlp = layer.mlp
            if isinstance(mlp, MoEBlock):
                inter = mlp.inter
                for e in range(mlp.n_experts):
                    ep = f"{p}mlp.experts.{e}."
                    t[ep + "gate_proj.weight"] = mlp.w13[e, :, :inter].t()
                    t[ep + "up_proj.weight"] = mlp.w13[e, :, inter:].t()
                    t[ep + "down_proj.weight"] = mlp.w2[e].t()
                t[p + "mlp.gate.weight"] = mlp.gate_w.t()
                t[p + "mlp.gate.e_score_correction_bias"] = mlp.gate_bias
                if mlp.shared is not None:
                    self._dense_targets(t, p + "mlp.shared_experts.", mlp.shared)
            else:
                self._dense_targets(t, p + "mlp.", mlp)
        t["model.norm.weight"] = self.norm
        t["lm_head.weight"] = self.lm_head
        if c.num_hidden_layers and not self.embed.is_meta:
            self._targets = t
        return t

    @staticmethod
    def _dense_targets(t: dict[str, torch.Tensor], prefix: str, mlp: DenseMLP) -> None:
        t[prefix + "gate_proj.weight"] = mlp.w13[:, : mlp.inter].t()
        t[prefix + "up_proj.weight"] = mlp.w13[:, mlp.inter :].t()
        t[prefix + "down_proj.weight"] = mlp.w2.t()

    def hf_parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor key of the HF checkpoint layout with its shape."""
        return {k: tuple(v.shape) for k, v in self._hf_targets().items()}

    def load_hf_tensor(self, key: str, tensor: torch.Tensor) -> None:
        """Copy one checkpoint tensor into place (cast to the stored dtype and device)."""
        targets = self._hf_targets()
        target = targets.get(key)
        if target is None:
            raise KeyError(f"unexpected checkpoint tensor {key!r}: this model has no such weight")
        if tuple(tensor.shape) != tuple(target.shape):
            raise ValueError(
                f"checkpoint tensor {key!r} has shape {tuple(tensor.shape)}, "
                f"the model expects {tuple(target.shape)}"
            )
        if target.is_meta:
            raise RuntimeError(
                "model was built with init='meta'; call materialize() before loading"
            )
        with torch.no_grad():
            target.copy_(tensor)
        self._loaded.add(key)
        if key.endswith("kv_b_proj.weight"):  # the decode path may hold a copy of it
            layer = self.layers[int(key.split(".")[2])]
            assert isinstance(layer, DecoderLayer)
            layer.attn.reset_views()

    def missing_hf_keys(self) -> list[str]:
        return [k for k in self._hf_targets() if k not in self._loaded]

    def is_ignored_hf_key(self, key: str) -> bool:
        """Checkpoint keys that are deliberately skipped: multi-token-prediction layers stored
        after the last decoder layer, and rotary tables some exporters save."""
        if key.endswith("rotary_emb.inv_freq"):
            return True
        m = _MTP_KEY.match(key)
        return m is not None and int(m.group(1)) >= self.config.num_hidden_layers

    def hf_state_items(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(key, view) pairs in the checkpoint layout; views may share storage and are not
        contiguous (weights are stored transposed). After changing weights in place through
        them, call :meth:`refresh`."""
        yield from self._hf_targets().items()

    def refresh(self) -> None:
        """Drop derived copies/views of the weights (rebuilt on the next forward)."""
        self._reset_views()

    # ------------------------------------------------------------------ attention path
    def set_attention_path(self, path: AttentionPath) -> None:
        """Force the absorbed or expanded MLA form (tests), or let each call choose ("auto")."""
        for layer in self.layers:
            assert isinstance(layer, DecoderLayer)
            layer.attn.path = path

    # ------------------------------------------------------------------ running
    def new_cache(
        self, batch: int = 1, capacity: int = 256, pad: list[int] | None = None
    ) -> LatentCache:
        c = self.config
        return LatentCache(
            c.num_hidden_layers,
            batch,
            c.kv_lora_rank + c.qk_rope_head_dim,
            capacity=capacity,
            dtype=self.dtype,
            device=self.device,
            pad=pad,
        )

    @torch.no_grad()
    def forward(
        self,
        input_ids: torch.Tensor,
        cache: LatentCache | None = None,
        *,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """Run ``input_ids`` [B, T] after what ``cache`` holds; return logits [B, T', vocab] in fp32
        for the last ``logits_to_keep`` positions (0 = all). A fresh cache is used when none is
        given."""
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        b, t = input_ids.shape
        if cache is None:
            cache = self.new_cache(b, capacity=t)
        if cache.batch != b:
            raise ValueError(f"cache holds {cache.batch} sequences, input has {b}")
        start = cache.length
        cache.reserve(start + t)
        step = self._step_info(cache, start, t)
        x = F.embedding(input_ids.to(self.device), self.embed)
        count_mask = None
        if cache.has_padding:
            count_mask = cache.key_valid(start + t)[:, start:]
        if b == 1 and t == 1 and count_mask is None:
            fused = self._fused_step(x, cache, step)
            if fused is not None:
                cache.advance(t)
                return fused
        # Inference mode for the layers (no version counters or view tracking: ~2% of a decode
        # step); the logits below are computed outside it so they are ordinary tensors that
        # callers (logits processors) may modify in place.
        with torch.inference_mode():
            x = self._layers_forward(x, step, cache, count_mask, logits_to_keep)
        cache.advance(t)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        x = rms_norm(x, self.norm, self.config.rms_norm_eps)
        if x.numel() == x.shape[-1] and x.device.type == "cpu" and cpu_kernels.enabled():
            # One row (decode): the largest single read per token, through the native GEMV.
            logits = xw(x.reshape(1, -1), self.lm_head.t())
            return logits.view(*x.shape[:-1], -1).float()
        return F.linear(x, self.lm_head).float()

    def _layers_forward(
        self,
        x: torch.Tensor,
        step: StepInfo,
        cache: LatentCache,
        count_mask: torch.Tensor | None,
        logits_to_keep: int,
    ) -> torch.Tensor:
        """The decoder layers one by one (every case: the general path)."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            assert isinstance(layer, DecoderLayer)
            keep = 0
            if isinstance(layer.mlp, MoEBlock):
                layer.mlp.count_mask = count_mask
                counting = layer.mlp.load_counts is not None
            else:
                counting = False
            if i == last and not counting:
                # Past the last layer's cache write only the kept positions matter: their
                # queries, MLP/experts and logits (router statistics need every token).
                keep = logits_to_keep
            x = layer.forward(x, step, cache.layers[i], keep)
        return x

    def _fused_step(
        self, x: torch.Tensor, cache: LatentCache, step: StepInfo
    ) -> torch.Tensor | None:
        """The logits of one token of one sequence from one native call for every layer, the
        final norm and the lm_head, where :func:`.decode_step.decode_plan` covers the model;
        ``None`` (``x`` untouched) where it does not."""
        if step.allowed is not None or x.device.type != "cpu":
            return None
        plan = decode_plan(self)
        if plan is None:
            return None
        return plan.run(x, cache, step.start, step.rot.cos, step.rot.sin)

    def _step_info(self, cache: LatentCache, start: int, t: int) -> StepInfo:
        end = start + t
        if not cache.has_padding:
            return StepInfo(start, t, self.rotary.range(start, t), None)
        rot = self.rotary.lookup(cache.positions(start, t))
        q_slots = torch.arange(start, end, device=self.device)
        k_slots = torch.arange(end, device=self.device)
        causal = k_slots[None, :] <= q_slots[:, None]  # [T, ctx]
        is_self = k_slots[None, :] == q_slots[:, None]
        allowed = causal[None] & (cache.key_valid(end)[:, None, :] | is_self[None])
        return StepInfo(start, t, rot, allowed)

    # ------------------------------------------------------------------ facts
    def parameter_count(self) -> int:
        return self.config.parameter_count()

    def active_parameters_per_token(self) -> int:
        return self.config.active_parameters_per_token()

    def weight_bytes_per_token(self) -> int:
        """Bytes of weights a single decode token must read (active weights plus one embedding row)."""
        c = self.config
        size = torch.finfo(self.dtype).bits // 8
        active = c.active_parameters_per_token()
        router = sum(
            c.n_routed_experts * (c.hidden_size + 1)
            for i in range(c.num_hidden_layers)
            if c.is_moe_layer(i)
        )
        return (active - router) * size + router * 4 + c.hidden_size * size

    def __repr__(self) -> str:  # keep it short: the default lists thousands of parameters
        c = self.config
        return (
            f"MoEForCausalLM({c.model_type}, layers={c.num_hidden_layers}, hidden={c.hidden_size}, "
            f"experts={c.n_routed_experts}x top-{c.num_experts_per_tok}, dtype={self.dtype}, "
            f"params={c.parameter_count() / 1e6:.1f}M, active={math.floor(c.active_parameters_per_token() / 1e5) / 10}M)"
        )
