"""The embedded model's training script, on a tiny recipe: it writes a checkpoint folder the
runtime loads and runs, the run is reproducible, and the batches score what they should."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from agent_runtime.backend import ModelSettings
from agent_runtime.model.backend import LocalMoEModel
from agent_runtime.model.chat_format import KimiK2ChatFormat
from agent_runtime.model.chat_template import KIMI_K2_COMPACT_TEMPLATE, ChatTemplate
from agent_runtime.model.corpus import evaluation_tasks, training_tasks
from agent_runtime.model.tokenizer import KimiTokenizer
from agent_runtime.model.train import COPY_PATTERN, Recipe, batches, encode_task, train

TINY_MODEL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "q_lora_rank": 32,
    "kv_lora_rank": 16,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8,
    "v_head_dim": 16,
    "n_routed_experts": 4,
    "num_experts_per_tok": 2,
    "n_shared_experts": 1,
    "first_k_dense_replace": 1,
    "routed_scaling_factor": 1.0,
}


def tiny_recipe(**overrides: object) -> Recipe:
    recipe = Recipe(
        steps=4,
        batch_tokens=2048,
        bucket=16,
        tokenizer_tasks=150,
        tokenizer_vocab=400,
        warmup_steps=2,
        copy_warmup_steps=2,
        model=dict(TINY_MODEL),
    )
    for key, value in overrides.items():
        setattr(recipe, key, value)
    return recipe


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-model")
    train(out, tiny_recipe(), log_every=1)
    return out


def test_training_writes_a_checkpoint_folder_with_its_log_and_loss_curve(trained: Path) -> None:
    for name in (
        "config.json",
        "model.safetensors",
        "tiktoken.model",
        "tokenizer_config.json",
        "chat_template.jinja",
        "generation_config.json",
        "training_log.json",
        "loss.png",
    ):
        assert (trained / name).is_file(), name
    assert (trained / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = json.loads((trained / "training_log.json").read_text())
    assert [p["step"] for p in log["points"]] == [1, 2, 3, 4]
    assert log["tokens"] == log["points"][-1]["tokens"] > 0
    assert log["recipe"]["seed"] == 1234
    config = json.loads((trained / "config.json").read_text())
    assert config["model_type"] == "kimi_k2" and config["n_routed_experts"] == 4
    tokenizer = json.loads((trained / "tokenizer_config.json").read_text())
    assert tokenizer["pat_str"] == COPY_PATTERN


@pytest.mark.anyio
async def test_the_trained_folder_runs_as_a_local_model_under_the_grammar(trained: Path) -> None:
    model = LocalMoEModel.from_pretrained(trained, threads=1)
    task = evaluation_tasks("unseen", 1, kind="single")[0]
    response = await model.complete(
        task.messages(upto=0), task.tools, ModelSettings(temperature=0.0, max_tokens=40)
    )
    # four steps teach nothing; the grammar still keeps any call to an offered tool
    offered = {spec.name for spec in task.tools}
    assert all(call.name in offered for call in response.message.tool_calls)


def test_the_same_recipe_trains_the_same_model(trained: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    train(again, tiny_recipe(), log_every=1)
    assert (again / "model.safetensors").read_bytes() == (
        trained / "model.safetensors"
    ).read_bytes()
    assert (again / "tiktoken.model").read_bytes() == (trained / "tiktoken.model").read_bytes()


def test_only_assistant_turns_get_full_weight(trained: Path) -> None:
    tokenizer = KimiTokenizer.from_folder(trained)
    fmt = KimiK2ChatFormat(tokenizer, ChatTemplate(KIMI_K2_COMPACT_TEMPLATE))
    task = next(t for t in training_tasks(3) if t.kind == "single")
    ids, weights = encode_task(fmt, task, 0.25)
    assert len(ids) == len(weights)
    full = tokenizer.decode([i for i, w in zip(ids, weights, strict=True) if w == 1.0])
    assert full.startswith("<think></think><|tool_calls_section_begin|>")
    assert task.steps[-1].text in full
    assert task.user not in full
    part = tokenizer.decode([i for i, w in zip(ids, weights, strict=True) if w != 1.0])
    assert task.user in part and "## Return of" in part


def test_batches_hold_one_right_padded_conversation_per_row(trained: Path) -> None:
    tokenizer = KimiTokenizer.from_folder(trained)
    fmt = KimiK2ChatFormat(tokenizer, ChatTemplate(KIMI_K2_COMPACT_TEMPLATE))
    recipe = tiny_recipe(copy_warmup_steps=0)
    for batch in itertools.islice(batches(fmt, recipe), 6):
        rows, width = batch.input_ids.shape
        assert rows * width <= recipe.batch_tokens or rows == 1
        real = batch.doc_ids >= 0
        lengths = real.sum(dim=1)
        for r in range(rows):
            n = int(lengths[r])
            assert bool(real[r, :n].all()) and not bool(real[r, n:].any())
            assert torch.equal(batch.positions[r, :n], torch.arange(n))
            # each target is the next input; nothing is predicted past the conversation
            assert torch.equal(batch.targets[r, : n - 1], batch.input_ids[r, 1:n])
            assert bool((batch.weights[r, n - 1 :] == 0).all())
