"""Bridges to an in-memory transformers ``DeepseekV3ForCausalLM`` (a test and benchmark reference).

transformers 5 keeps a layer's experts fused in memory (``mlp.experts.gate_up_proj`` ``[E, 2I, H]``
with the gate rows first, ``mlp.experts.down_proj`` ``[E, H, I]``) while checkpoints on disk hold
one tensor per expert. :func:`checkpoint_items` turns the in-memory state into the on-disk keys,
so a transformers model loads into ours through exactly the path a checkpoint takes.
transformers is imported by the caller, never here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

from .config import MoEConfig
from .transformer import MoEForCausalLM

__all__ = ["checkpoint_items", "from_transformers"]

_GATE_UP = "mlp.experts.gate_up_proj"
_DOWN = "mlp.experts.down_proj"


def checkpoint_items(state_dict: Mapping[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    """(on-disk key, tensor) pairs for a transformers state dict, splitting fused experts."""
    for key, value in state_dict.items():
        if key.endswith(_GATE_UP):
            base = key[: -len("gate_up_proj")]
            inter = value.shape[1] // 2
            for e in range(value.shape[0]):
                yield f"{base}{e}.gate_proj.weight", value[e, :inter]
                yield f"{base}{e}.up_proj.weight", value[e, inter:]
        elif key.endswith(_DOWN):
            base = key[: -len("down_proj")]
            for e in range(value.shape[0]):
                yield f"{base}{e}.down_proj.weight", value[e]
        else:
            yield key, value


def from_transformers(
    hf_model: Any, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> MoEForCausalLM:
    """Our model with the weights of a transformers ``DeepseekV3ForCausalLM``."""
    config = MoEConfig.from_hf(hf_model.config.to_dict())
    model = MoEForCausalLM(config, dtype=dtype, device=device, init="empty")
    for key, value in checkpoint_items(hf_model.state_dict()):
        if not model.is_ignored_hf_key(key):
            model.load_hf_tensor(key, value)
    missing = model.missing_hf_keys()
    if missing:
        raise KeyError(f"transformers model lacks {len(missing)} weights, e.g. {missing[:3]}")
    return model
