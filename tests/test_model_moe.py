"""The three expert-execution strategies of a MoE block compute the same function."""

from __future__ import annotations

import pytest
import torch
from model_support import GROUPED_MOE_CONFIG

from agent_runtime.model.moe import MoEBlock

CFG = GROUPED_MOE_CONFIG


def _pair(dtype: torch.dtype) -> tuple[MoEBlock, MoEBlock]:
    loop = MoEBlock(CFG, dtype=dtype, device=torch.device("cpu"))
    grouped = MoEBlock(CFG, dtype=dtype, device=torch.device("cpu"), grouped=True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for a, b in zip(loop.parameters(), grouped.parameters(), strict=True):
            a.copy_(torch.randn(a.shape, generator=gen) * 0.3)
            b.copy_(a)
    return loop, grouped


def test_grouped_layout_is_the_transposed_checkpoint_layout() -> None:
    _, grouped = _pair(torch.float32)
    # storage [E, 2I, H] seen as [E, H, 2I]: column-major per expert, what grouped GEMMs want
    assert grouped.w13.shape == (8, 32, 32) and grouped.w13.stride() == (32 * 32, 1, 32)
    assert grouped.w2.shape == (8, 16, 32) and grouped.w2.stride() == (16 * 32, 1, 16)


@pytest.mark.parametrize("tokens", [1, 2, 37])
def test_token_loop_sorted_loop_and_grouped_gemm_agree(tokens: int) -> None:
    loop, grouped = _pair(torch.float32)
    x = torch.randn(1, tokens, 32, generator=torch.Generator().manual_seed(tokens))
    with torch.no_grad():
        a = loop(x)
        b = grouped(x)  # grouped GEMM path (F.grouped_mm also runs on CPU)
        loop.load_counts = torch.zeros(8, dtype=torch.long)  # forces the sorted path for 1 token
        c = loop(x)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)
    assert int(loop.load_counts.sum()) == tokens * 3


def test_bf16_paths_agree_within_bf16_precision() -> None:
    loop, grouped = _pair(torch.bfloat16)
    x = torch.randn(1, 9, 32, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    with torch.no_grad():
        a = loop(x).float()
        b = grouped(x).float()
    assert ((a - b).norm() / a.norm()).item() < 2e-2
