"""Generation on our model: batches equal single runs, sampling controls, stop tokens, the hook."""

from __future__ import annotations

import pytest
import torch

from agent_runtime.model.config import MoEConfig
from agent_runtime.model.generation import (
    PAD_ID,
    SamplingParams,
    generate,
    generate_stream,
    sample_next,
)
from agent_runtime.model.mla import AttentionPath
from agent_runtime.model.transformer import MoEForCausalLM

TINY = {
    "model_type": "deepseek_v3",
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "q_lora_rank": 32,
    "kv_lora_rank": 16,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8,
    "v_head_dim": 16,
    "n_routed_experts": 8,
    "num_experts_per_tok": 2,
    "n_shared_experts": 1,
    "first_k_dense_replace": 1,
    "n_group": 2,
    "topk_group": 1,
    "routed_scaling_factor": 2.5,
    "eos_token_id": 2,
    "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
}

PROMPTS = [[7, 8, 9, 10, 11, 12, 13], [40], [100, 101, 102, 103]]


@pytest.fixture(scope="module")
def model() -> MoEForCausalLM:
    m = MoEForCausalLM(MoEConfig.from_hf(TINY), seed=11)
    with torch.no_grad():  # sharper weights: distinct, confident predictions
        for key, t in m.hf_state_items():
            if not key.endswith("norm.weight"):
                t.mul_(6.0)
    m.refresh()
    return m


def test_batch_of_different_lengths_generates_what_each_prompt_generates_alone(
    model: MoEForCausalLM,
) -> None:
    params = SamplingParams(max_new_tokens=10, stop_token_ids=())
    batch = generate(model, PROMPTS, params)
    for i, prompt in enumerate(PROMPTS):
        alone = generate(model, [prompt], params)
        assert batch.tokens[i] == alone.tokens[0]
    assert batch.prompt_lengths == [7, 1, 4]
    assert len({tuple(t) for t in batch.tokens}) == 3


@pytest.mark.parametrize("path", ["absorbed", "expanded"])
def test_batched_logits_equal_single_logits(model: MoEForCausalLM, path: AttentionPath) -> None:
    model.set_attention_path(path)
    try:
        _check_batched_logits(model)
    finally:
        model.set_attention_path("auto")


def _check_batched_logits(model: MoEForCausalLM) -> None:
    longest = max(len(p) for p in PROMPTS)
    pad = [longest - len(p) for p in PROMPTS]
    cache = model.new_cache(len(PROMPTS), pad=pad)
    ids = torch.zeros(len(PROMPTS), longest, dtype=torch.long)
    for i, p in enumerate(PROMPTS):
        ids[i, pad[i] :] = torch.tensor(p)
    batched = model(ids, cache, logits_to_keep=1)[:, -1]
    nxt = batched.argmax(-1, keepdim=True)
    batched_step = model(nxt, cache)[:, -1]
    for i, p in enumerate(PROMPTS):
        c = model.new_cache(1)
        single = model(torch.tensor([p]), c, logits_to_keep=1)[:, -1]
        torch.testing.assert_close(batched[i : i + 1], single, atol=1e-5, rtol=1e-5)
        step = model(nxt[i : i + 1], c)[:, -1]
        torch.testing.assert_close(batched_step[i : i + 1], step, atol=1e-5, rtol=1e-5)


def test_seeded_sampling_is_reproducible_and_batch_independent(model: MoEForCausalLM) -> None:
    params = SamplingParams(
        max_new_tokens=12, temperature=1.3, top_k=50, top_p=0.95, seed=5, stop_token_ids=()
    )
    a = generate(model, PROMPTS, params)
    b = generate(model, PROMPTS, params)
    assert a.tokens == b.tokens
    first_alone = generate(model, [PROMPTS[0]], params)
    assert first_alone.tokens[0] == a.tokens[0]
    other_seed = generate(model, PROMPTS, SamplingParams(**{**params.__dict__, "seed": 6}))
    assert other_seed.tokens != a.tokens


def test_top_k_one_is_greedy(model: MoEForCausalLM) -> None:
    greedy = generate(model, PROMPTS, SamplingParams(max_new_tokens=6, stop_token_ids=()))
    sampled = generate(
        model,
        PROMPTS,
        SamplingParams(max_new_tokens=6, temperature=0.9, top_k=1, seed=1, stop_token_ids=()),
    )
    assert sampled.tokens == greedy.tokens


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = torch.tensor([[4.0, 3.0, 0.0, -1.0, -2.0]])
    probs = logits.softmax(-1)[0]
    assert probs[0] + probs[1] > 0.9 > probs[0]
    params = SamplingParams(temperature=1.0, top_p=0.9)
    gens = [torch.Generator().manual_seed(s) for s in range(1)]
    seen = {int(sample_next(logits, params, gens)[0]) for _ in range(200)}
    assert seen == {0, 1}


def test_stop_token_ends_a_row_and_is_reported(model: MoEForCausalLM) -> None:
    free = generate(model, [PROMPTS[0]], SamplingParams(max_new_tokens=8, stop_token_ids=()))
    stop_at = free.tokens[0][3]
    first = free.tokens[0].index(stop_at)
    res = generate(model, [PROMPTS[0]], SamplingParams(max_new_tokens=8, stop_token_ids=[stop_at]))
    assert res.tokens[0] == free.tokens[0][:first]
    assert res.finish_reasons == ["stop"]
    assert res.stop_tokens == [stop_at]


def test_default_stop_is_the_config_eos(model: MoEForCausalLM) -> None:
    def force_eos(step: int, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if step == 2:
            logits = torch.full_like(logits, float("-inf"))
            logits[:, 2] = 0.0
        return logits

    res = generate(
        model, [PROMPTS[1]], SamplingParams(max_new_tokens=10), logits_processor=force_eos
    )
    assert len(res.tokens[0]) == 2 and res.finish_reasons == ["stop"] and res.stop_tokens == [2]


def test_logits_hook_sees_every_step_and_can_force_tokens(model: MoEForCausalLM) -> None:
    seen: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = []
    forced = [17, 18, 19, 20, 21]

    def hook(step: int, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        seen.append((step, tuple(ids.shape), tuple(logits.shape)))
        if step > 0:
            assert ids[:, -1].tolist() == [forced[step - 1]] * 3
        out = torch.full_like(logits, float("-inf"))
        out[:, forced[step]] = 0.0
        return out

    res = generate(
        model, PROMPTS, SamplingParams(max_new_tokens=5, stop_token_ids=()), logits_processor=hook
    )
    assert res.tokens == [forced] * 3
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4]
    assert seen[0][1] == (3, 7) and seen[4][1] == (3, 11)
    assert all(s[2] == (3, 300) for s in seen)


def test_hook_input_marks_left_padding(model: MoEForCausalLM) -> None:
    captured: list[torch.Tensor] = []

    def hook(step: int, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        captured.append(ids.clone())
        return logits

    generate(
        model, PROMPTS, SamplingParams(max_new_tokens=1, stop_token_ids=()), logits_processor=hook
    )
    ids = captured[0]
    assert ids[1].tolist() == [PAD_ID] * 6 + [40]
    assert ids[0].tolist() == PROMPTS[0]


def test_stream_yields_steps_and_none_for_finished_rows(model: MoEForCausalLM) -> None:
    free = generate(model, PROMPTS, SamplingParams(max_new_tokens=6, stop_token_ids=()))
    stop = free.tokens[1][1]
    if stop in free.tokens[0][:2] or stop in free.tokens[2][:2]:
        pytest.fail("test premise: stop token must end only row 1 early")
    steps = list(
        generate_stream(model, PROMPTS, SamplingParams(max_new_tokens=6, stop_token_ids=[stop]))
    )
    assert steps[1].tokens[1] == stop
    assert all(s.tokens[1] is None for s in steps[2:])
    assert [s.step for s in steps] == list(range(len(steps)))


def test_bad_requests_are_rejected(model: MoEForCausalLM) -> None:
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[1, 2], []])
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1.0)
    assert generate(model, [[1]], SamplingParams(max_new_tokens=0)).tokens == [[]]


def test_a_cache_continues_a_conversation(model: MoEForCausalLM) -> None:
    params = SamplingParams(max_new_tokens=6, stop_token_ids=())
    first, second = [7, 8, 9, 10], [11, 12, 13]
    whole = generate(model, [first + second], params)
    cache = model.new_cache(1, capacity=2)
    reply = generate(
        model, [first], SamplingParams(max_new_tokens=3, stop_token_ids=()), cache=cache
    )
    assert cache.length == len(first) + 2  # the last generated token was not fed back
    cache.truncate(len(first))  # drop the reply, continue from the first prompt only
    cont = generate(model, [second], params, cache=cache)
    assert cont.tokens == whole.tokens
    assert len(reply.tokens[0]) == 3
    with pytest.raises(ValueError, match="one unpadded sequence"):
        generate(model, PROMPTS, params, cache=model.new_cache(3))
