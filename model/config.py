"""The architecture settings of a DeepSeek-V3 / Kimi K2 model, read from a HF ``config.json``.

The engine honours every field that changes what the model computes. A field whose value this
engine does not implement (a different scoring function, another rope scaling, attention biases,
tied embeddings, ...) is refused with :class:`UnsupportedConfigError` naming the field: silently
running a different model than the checkpoint describes would produce plausible garbage.

Fields that only matter for training (auxiliary losses, dropout, initialiser ranges) or for
multi-device deployment are accepted and kept so that :meth:`MoEConfig.to_hf_dict` writes them back.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from agent_runtime.errors import ConfigError

__all__ = ["MoEConfig", "UnsupportedConfigError"]

_MODEL_TYPES = ("deepseek_v3", "kimi_k2")

# Keys that never change inference results; kept verbatim for round trips.
_INERT_KEYS = frozenset(
    {
        "architectures",
        "auto_map",
        "aux_loss_alpha",
        "seq_aux",
        "attention_dropout",
        "initializer_range",
        "use_cache",
        "output_router_logits",
        "pretraining_tp",
        "ep_size",
        "transformers_version",
        "_name_or_path",
        "router_aux_loss_coef",
        "generation_config",
        "num_nextn_predict_layers",
        "num_mtp_layers",
        "head_dim",
        "qk_head_dim",
        "_attn_implementation_autoset",
        "_experts_implementation",
        # generic transformers PreTrainedConfig fields
        "chunk_size_feed_forward",
        "id2label",
        "label2id",
        "is_encoder_decoder",
        "output_attentions",
        "output_hidden_states",
        "problem_type",
        "return_dict",
        "tokenizer_class",
        "task_specific_params",
    }
)


class UnsupportedConfigError(ConfigError, ValueError):
    """A config value this engine cannot honour; the message names the field and the value."""


@dataclass
class MoEConfig:
    """Every architecture setting, with the HF field names so a config.json maps 1:1 onto it."""

    vocab_size: int = 129280
    hidden_size: int = 7168
    intermediate_size: int = 18432
    moe_intermediate_size: int = 2048
    num_hidden_layers: int = 61
    num_attention_heads: int = 128
    # Not used by MLA (every head has its own key from the shared latent); kept for round trips.
    num_key_value_heads: int | None = None
    q_lora_rank: int | None = 1536
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    num_experts_per_tok: int = 8
    n_group: int = 1
    topk_group: int = 1
    first_k_dense_replace: int = 0
    moe_layer_freq: int = 1
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = True
    scoring_func: str = "sigmoid"
    topk_method: str = "noaux_tc"
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    rope_interleave: bool = True
    attention_bias: bool = False
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    model_type: str = "deepseek_v3"
    torch_dtype: str | None = None
    quantization_config: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        self._validate()

    # ---------------------------------------------------------------- derived sizes
    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def is_fp8(self) -> bool:
        qc = self.quantization_config
        return bool(qc) and str(qc.get("quant_method", "")).lower() == "fp8"  # type: ignore[union-attr]

    @property
    def rope_type(self) -> str:
        if not self.rope_scaling:
            return "default"
        return str(self.rope_scaling.get("rope_type", self.rope_scaling.get("type", "default")))

    def is_moe_layer(self, layer: int) -> bool:
        """Layers from ``first_k_dense_replace`` on route through experts; earlier ones are dense."""
        return layer >= self.first_k_dense_replace and self.n_routed_experts > 0

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    def softmax_scale(self) -> float:
        """qk_head_dim^-0.5, times mscale² when YaRN sets ``mscale_all_dim`` (DeepSeek's rule)."""
        scale = float(self.qk_head_dim) ** -0.5
        if self.rope_type == "yarn" and self.rope_scaling:
            mscale_all_dim = float(self.rope_scaling.get("mscale_all_dim") or 0.0)
            factor = float(self.rope_scaling["factor"])
            if mscale_all_dim and factor > 1:
                m = 0.1 * mscale_all_dim * math.log(factor) + 1.0
                scale *= m * m
        return float(scale)

    # ---------------------------------------------------------------- parameter counts
    def parameter_count(self) -> int:
        """All weights of the model (what a checkpoint holds, MTP layers excluded)."""
        return self._count(active=False)

    def active_parameters_per_token(self, *, include_embedding: bool = False) -> int:
        """Weights one token touches: attention, dense MLPs, shared experts, top-k routed experts,
        routers, final norm and lm_head. The embedding is a row lookup, so it is left out unless
        asked for (it is then counted whole, the usual convention)."""
        return self._count(active=True, include_embedding=include_embedding)

    def _count(self, *, active: bool, include_embedding: bool = True) -> int:
        h = self.hidden_size
        attn = 0
        if self.q_lora_rank is None:
            attn += h * self.num_attention_heads * self.qk_head_dim
        else:
            attn += h * self.q_lora_rank + self.q_lora_rank
            attn += self.q_lora_rank * self.num_attention_heads * self.qk_head_dim
        attn += h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
        attn += (
            self.kv_lora_rank * self.num_attention_heads * (self.qk_nope_head_dim + self.v_head_dim)
        )
        attn += self.num_attention_heads * self.v_head_dim * h
        total = 0
        for layer in range(self.num_hidden_layers):
            total += attn + 2 * h
            if self.is_moe_layer(layer):
                expert = 3 * h * self.moe_intermediate_size
                n = self.num_experts_per_tok if active else self.n_routed_experts
                total += n * expert + self.n_shared_experts * expert
                total += self.n_routed_experts * h + self.n_routed_experts
            else:
                total += 3 * h * self.intermediate_size
        total += h + self.vocab_size * h  # final norm + lm_head
        if not active or include_embedding:
            total += self.vocab_size * h
        return total

    # ---------------------------------------------------------------- (de)serialisation
    @classmethod
    def from_hf(cls, source: str | os.PathLike[str] | Mapping[str, Any]) -> MoEConfig:
        """Build from a config dict, a ``config.json`` path, or a checkpoint directory."""
        if isinstance(source, Mapping):
            raw = dict(source)
        else:
            path = Path(source)
            if path.is_dir():
                path = path / "config.json"
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"cannot read model config {path}: {exc}") from exc
        return cls._from_dict(raw)

    @classmethod
    def _from_dict(cls, raw: dict[str, Any]) -> MoEConfig:
        model_type = raw.get("model_type", "deepseek_v3")
        if model_type not in _MODEL_TYPES:
            raise UnsupportedConfigError(
                f"model_type {model_type!r} is not supported (expected one of {_MODEL_TYPES})"
            )
        known = {f.name for f in fields(cls)} - {
            "extra",
            "rope_scaling",
            "rope_theta",
            "torch_dtype",
        }
        kwargs: dict[str, Any] = {k: raw[k] for k in known if k in raw}
        extra = {k: v for k, v in raw.items() if k not in known}
        # transformers 5 writes rope settings as `rope_parameters` (with rope_theta inside),
        # original checkpoints as top-level `rope_theta` plus `rope_scaling`.
        rope = raw.get("rope_scaling") or raw.get("rope_parameters")
        rope = dict(rope) if rope else None
        theta = raw.get("rope_theta")
        if theta is None and rope is not None:
            theta = rope.get("rope_theta")
        if rope is not None:
            rope.pop("rope_theta", None)
            rtype = rope.get("rope_type", rope.get("type", "default"))
            rope = None if rtype == "default" and set(rope) <= {"rope_type", "type"} else rope
        kwargs["rope_scaling"] = rope
        if theta is not None:
            kwargs["rope_theta"] = float(theta)
        dtype = raw.get("torch_dtype", raw.get("dtype"))
        kwargs["torch_dtype"] = dtype if isinstance(dtype, str) else None
        for k in ("rope_scaling", "rope_parameters", "rope_theta", "torch_dtype", "dtype"):
            extra.pop(k, None)
        unknown = sorted(k for k in extra if k not in _INERT_KEYS)
        kwargs["extra"] = extra
        cfg = cls(**kwargs)
        cfg.extra["_unknown_keys"] = unknown
        return cfg

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``config.json`` content in the layout original checkpoints use."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("extra", "quantization_config"):
                continue
            out[f.name] = getattr(self, f.name)
        if out["rope_scaling"] is None:
            del out["rope_scaling"]
        if out["torch_dtype"] is None:
            del out["torch_dtype"]
        if self.quantization_config is not None:
            out["quantization_config"] = dict(self.quantization_config)
        for k, v in self.extra.items():
            if not k.startswith("_"):
                out.setdefault(k, v)
        out.setdefault("architectures", ["DeepseekV3ForCausalLM"])
        return out

    # ---------------------------------------------------------------- validation
    def _validate(self) -> None:
        def refuse(name: str, value: Any, why: str) -> None:
            raise UnsupportedConfigError(f"config field {name}={value!r} is not supported: {why}")

        if self.model_type not in _MODEL_TYPES:
            refuse("model_type", self.model_type, f"expected one of {_MODEL_TYPES}")
        if self.hidden_act != "silu":
            refuse("hidden_act", self.hidden_act, "only 'silu' is implemented")
        if self.scoring_func != "sigmoid":
            refuse(
                "scoring_func", self.scoring_func, "only 'sigmoid' router scores are implemented"
            )
        if self.topk_method != "noaux_tc":
            refuse("topk_method", self.topk_method, "only 'noaux_tc' routing is implemented")
        if self.attention_bias:
            refuse("attention_bias", self.attention_bias, "MLA projections without bias only")
        if self.tie_word_embeddings:
            refuse("tie_word_embeddings", True, "lm_head must be its own weight")
        if self.moe_layer_freq != 1:
            refuse(
                "moe_layer_freq",
                self.moe_layer_freq,
                "every layer after the dense ones must be MoE",
            )
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "kv_lora_rank",
            "qk_nope_head_dim",
            "qk_rope_head_dim",
            "v_head_dim",
        ):
            if int(getattr(self, name)) <= 0:
                refuse(name, getattr(self, name), "must be positive")
        if self.qk_rope_head_dim % 2:
            refuse("qk_rope_head_dim", self.qk_rope_head_dim, "rotary dims come in pairs")
        if self.q_lora_rank is not None and self.q_lora_rank <= 0:
            refuse("q_lora_rank", self.q_lora_rank, "must be positive or null")
        if self.first_k_dense_replace < self.num_hidden_layers and self.n_routed_experts > 0:
            if self.n_group < 1 or self.n_routed_experts % self.n_group:
                refuse(
                    "n_group",
                    self.n_group,
                    f"must divide n_routed_experts ({self.n_routed_experts})",
                )
            if not 1 <= self.topk_group <= self.n_group:
                refuse("topk_group", self.topk_group, f"must be in 1..n_group ({self.n_group})")
            per_group = self.n_routed_experts // self.n_group
            if self.n_group > 1 and per_group < 2:
                refuse("n_group", self.n_group, "group scores need at least 2 experts per group")
            if not 1 <= self.num_experts_per_tok <= self.topk_group * per_group:
                refuse(
                    "num_experts_per_tok",
                    self.num_experts_per_tok,
                    "must be at least 1 and fit in the selected groups",
                )
            if self.moe_intermediate_size <= 0:
                refuse("moe_intermediate_size", self.moe_intermediate_size, "must be positive")
        if self.rope_type not in ("default", "yarn"):
            refuse(
                "rope_scaling", self.rope_scaling, "only default and 'yarn' rope are implemented"
            )
        if self.rope_type == "yarn":
            rs = self.rope_scaling or {}
            if "factor" not in rs or "original_max_position_embeddings" not in rs:
                refuse(
                    "rope_scaling", rs, "yarn needs 'factor' and 'original_max_position_embeddings'"
                )
            if rs.get("attention_factor") is not None:
                refuse("rope_scaling.attention_factor", rs["attention_factor"], "not implemented")
            if rs.get("truncate", True) is not True:
                refuse(
                    "rope_scaling.truncate", rs["truncate"], "only truncated ramps are implemented"
                )
        if self.quantization_config is not None and not self.is_fp8:
            refuse(
                "quantization_config",
                self.quantization_config.get("quant_method"),
                "only fp8 block-quantised checkpoints are implemented",
            )
