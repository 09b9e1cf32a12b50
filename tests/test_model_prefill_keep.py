"""Prefill with ``logits_to_keep``: the last layer computes only the kept positions past its
cache write, so logits, the cache and router statistics must equal those of a full prefill.
Also: weight storage advised into transparent huge pages."""

from __future__ import annotations

import sys

import pytest
import torch
from model_support import small_moe_config

from agent_runtime.model.config import MoEConfig
from agent_runtime.model.layers import advise_huge_pages, empty_weight
from agent_runtime.model.stats import RouterStats
from agent_runtime.model.transformer import MoEForCausalLM

CFG = small_moe_config(vocab_size=211, num_hidden_layers=3, first_k_dense_replace=1)


@pytest.fixture(params=[None, 16], ids=["q_lora", "no_q_lora"])
def model(request: pytest.FixtureRequest) -> MoEForCausalLM:
    cfg = dict(CFG)
    if request.param is not None:
        cfg["q_lora_rank"] = None
    return MoEForCausalLM(MoEConfig.from_hf(cfg), seed=4)


@pytest.mark.parametrize("path", ["auto", "absorbed", "expanded"])
@pytest.mark.parametrize(("length", "keep"), [(9, 1), (9, 3), (80, 1), (80, 70)])
def test_kept_logits_and_cache_equal_a_full_prefill(
    model: MoEForCausalLM, path: str, length: int, keep: int
) -> None:
    model.set_attention_path(path)
    ids = torch.randint(
        0, CFG["vocab_size"], (1, length), generator=torch.Generator().manual_seed(3)
    )
    full_cache, kept_cache = model.new_cache(1, length + 2), model.new_cache(1, length + 2)
    full = model(ids, full_cache)
    kept = model(ids, kept_cache, logits_to_keep=keep)
    assert kept.shape == (1, keep, CFG["vocab_size"])
    torch.testing.assert_close(kept, full[:, -keep:], rtol=0, atol=1e-5)
    for a, b in zip(full_cache.layers, kept_cache.layers, strict=True):
        torch.testing.assert_close(a[:, :length], b[:, :length], rtol=0, atol=0)
    # the next decode step sees the same context
    nxt = full[:, -1].argmax(-1, keepdim=True)
    torch.testing.assert_close(model(nxt, kept_cache), model(nxt, full_cache), rtol=0, atol=1e-5)


def test_kept_logits_of_a_left_padded_batch_equal_a_full_prefill(model: MoEForCausalLM) -> None:
    ids = torch.randint(0, CFG["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(5))
    full = model(ids, model.new_cache(2, 8, pad=[0, 3]))
    kept = model(ids, model.new_cache(2, 8, pad=[0, 3]), logits_to_keep=1)
    torch.testing.assert_close(kept, full[:, -1:], rtol=0, atol=1e-5)


def test_router_statistics_count_every_prompt_token_with_logits_to_keep(
    model: MoEForCausalLM,
) -> None:
    stats = RouterStats(model)
    stats.enable()
    ids = torch.arange(11)[None]
    model(ids, logits_to_keep=1)
    kept_counts = stats.counts()
    stats.reset()
    model(ids)
    assert kept_counts == stats.counts()
    assert all(sum(row) == 11 * CFG["num_experts_per_tok"] for row in kept_counts.values())


@pytest.mark.parametrize("second", [1, 5, 70])
def test_kept_logits_of_a_continued_prompt_equal_a_full_prefill(
    model: MoEForCausalLM, second: int
) -> None:
    ids = torch.randint(
        0, CFG["vocab_size"], (1, 12 + second), generator=torch.Generator().manual_seed(9)
    )
    full = model(ids)
    cache = model.new_cache(1, 4)  # small: the second part also grows the cache
    model(ids[:, :12], cache, logits_to_keep=1)
    kept = model(ids[:, 12:], cache, logits_to_keep=1)
    torch.testing.assert_close(kept, full[:, -1:], rtol=0, atol=1e-5)


def test_weights_are_advised_into_huge_pages_only_where_it_applies() -> None:
    assert advise_huge_pages(torch.empty(1000)) is False  # smaller than two huge pages
    assert advise_huge_pages(torch.empty(1 << 21, device="meta")) is False
    big = empty_weight((3 << 20,), torch.float32, "cpu")  # 12 MiB, advised before first write
    big.fill_(2.0)
    assert float(big.sum()) == 2.0 * (3 << 20)
    if sys.platform == "linux" and "[never]" not in _thp_setting():
        assert advise_huge_pages(torch.empty(3 << 20)) is True


def _thp_setting() -> str:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read()
    except OSError:
        return "[never]"
