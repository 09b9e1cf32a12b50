"""Helpers shared by the model tests: reference FP8 dequantisation, random transformers models,
and the small config of the tests that need no transformers reference."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from agent_runtime.model.config import MoEConfig

__all__ = [
    "GROUPED_MOE_CONFIG",
    "eager_reference",
    "local_checkpoint",
    "random_reference",
    "reference_dequant",
    "small_moe_config",
]


def reference_dequant(
    weight: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int]
) -> torch.Tensor:
    """The obvious definition, kept deliberately naive so it can judge the real one: every block
    of the weight times its own scale, element by element in float64 (the result stays float64;
    callers round it once to the dtype they compare against)."""
    rows, cols = weight.shape
    out = torch.empty(rows, cols, dtype=torch.float64)
    w64 = weight.to(torch.float64)
    for bi in range(math.ceil(rows / block[0])):
        for bj in range(math.ceil(cols / block[1])):
            r0, c0 = bi * block[0], bj * block[1]
            r1, c1 = min(r0 + block[0], rows), min(c0 + block[1], cols)
            out[r0:r1, c0:c1] = w64[r0:r1, c0:c1] * float(scale_inv[bi, bj])
    return out


def eager_reference(config: dict[str, Any], seed: int = 0, *, bias_mean: float = 0.0) -> Any:
    """transformers' ``DeepseekV3ForCausalLM`` for ``config`` in eval mode on its eager kernels,
    with its own random weights, non-unit norms, a sharp router and a random router bias of mean
    ``bias_mean`` (so the biased selection and the unbiased weights really differ; a strongly
    negative mean makes group-limited routing depend on the group mask)."""
    import transformers

    torch.manual_seed(seed)
    ref = transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(**config)).eval()
    ref.set_experts_implementation("eager")
    ref.set_attn_implementation("eager")
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(1.0, 0.2)
            elif name.endswith("mlp.gate.weight"):
                p.normal_(0.0, 0.3)
        for layer in ref.model.layers:
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None:
                gate.e_score_correction_bias.normal_(bias_mean, 0.1)
    return ref


def random_reference(config: dict[str, Any], seed: int, *, spread_rows: bool = False) -> Any:
    """transformers' ``DeepseekV3ForCausalLM`` for ``config`` with every weight random: norms
    near 1, a non-zero router bias (so biased selection and unbiased weights really differ),
    other weights ~0.06 * N(0, 1). With ``spread_rows`` the magnitudes also vary by row, so FP8
    blocks get very different scales. Returned as built (default implementations, train mode)."""
    import transformers

    hf_config = transformers.DeepseekV3Config(**config)
    torch.manual_seed(seed)
    model = transformers.DeepseekV3ForCausalLM(hf_config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if "rotary_emb" in name:
                continue
            noise = torch.randn(tensor.shape, generator=gen)
            if "norm" in name:
                tensor.copy_(1.0 + 0.1 * noise)
            elif "e_score_correction_bias" in name:
                tensor.copy_(0.05 * noise)
            elif spread_rows:
                rows = tensor.shape[0]
                spread = torch.logspace(-0.7, 0.7, rows).reshape(rows, *([1] * (tensor.dim() - 1)))
                tensor.copy_(0.06 * noise * spread)
            else:
                tensor.copy_(0.06 * noise)
    return model


def small_moe_config(**overrides: Any) -> dict[str, Any]:
    """A very small DeepSeek-V3 config for tests of our model alone (no transformers reference):
    2 heads of hidden 64, 8 experts top-3, 1 shared; ``overrides`` applied on top."""
    cfg: dict[str, Any] = {
        "model_type": "deepseek_v3",
        "vocab_size": 200,
        "hidden_size": 64,
        "intermediate_size": 96,
        "moe_intermediate_size": 24,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "q_lora_rank": 24,
        "kv_lora_rank": 16,
        "qk_nope_head_dim": 8,
        "qk_rope_head_dim": 8,
        "v_head_dim": 12,
        "n_routed_experts": 8,
        "num_experts_per_tok": 3,
        "n_shared_experts": 1,
        "first_k_dense_replace": 2,
        "routed_scaling_factor": 1.5,
    }
    cfg.update(overrides)
    return cfg


def local_checkpoint(
    root: Path,
    tokenizer_dir: Path,
    *,
    model_type: str = "kimi_k2",
    seed: int = 0,
    generation_config: dict[str, Any] | None = None,
    fp8_block_size: tuple[int, int] | None = None,
    **overrides: Any,
) -> Path:
    """A whole checkpoint folder as a user would point ``LocalMoEModel`` at: random weights of
    :func:`small_moe_config` (``overrides`` on top) sized to the tokenizer in ``tokenizer_dir``,
    whose files are copied in, plus a ``generation_config.json``. ``fp8_block_size`` writes the
    linear weights FP8 block-quantised, as DeepSeek-V3 and Kimi K2 ship them."""
    from agent_runtime.model.checkpoint import save_checkpoint
    from agent_runtime.model.config import MoEConfig
    from agent_runtime.model.tokenizer import load_tokenizer
    from agent_runtime.model.transformer import MoEForCausalLM

    tokenizer = load_tokenizer(tokenizer_dir)
    eos = list(tokenizer.eos_ids)
    cfg = small_moe_config(
        model_type=model_type,
        vocab_size=tokenizer.vocab_size,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=eos[0] if len(eos) == 1 else eos,
        **overrides,
    )
    model = MoEForCausalLM(MoEConfig.from_hf(cfg), seed=seed)
    save_checkpoint(model, root, fp8_block_size=fp8_block_size)
    for item in Path(tokenizer_dir).iterdir():
        if item.is_file():
            shutil.copy(item, root / item.name)
    gen = {"eos_token_id": eos, "do_sample": False, "max_new_tokens": 256}
    gen.update(generation_config or {})
    (root / "generation_config.json").write_text(json.dumps(gen), encoding="utf-8")
    return root


GROUPED_MOE_CONFIG = MoEConfig(
    vocab_size=10,
    hidden_size=32,
    moe_intermediate_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    q_lora_rank=8,
    kv_lora_rank=8,
    qk_nope_head_dim=4,
    qk_rope_head_dim=4,
    v_head_dim=4,
    n_routed_experts=8,
    num_experts_per_tok=3,
    n_group=2,
    topk_group=1,
    routed_scaling_factor=2.0,
)
"""One MoE block's worth of config for the expert-execution tests: 8 experts top-3 in 2 groups
keep 1, small enough to compare the loop and grouped-GEMM paths element by element."""
