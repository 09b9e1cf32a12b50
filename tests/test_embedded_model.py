"""The embedded model: the checkpoint shipped in the package and its place as the default model.

These tests hold for any checkpoint in the shipped layout, the untrained placeholder included;
what the trained model answers is tested by the evaluation (tests/test_model_evaluate.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from agent_runtime import Agent
from agent_runtime.backend import ModelSettings
from agent_runtime.config import build_model, load_config, local_toolsets
from agent_runtime.errors import ConfigError, UserError
from agent_runtime.model import LocalMoEModel, embedded
from agent_runtime.model.chat_template import KIMI_K2_COMPACT_TEMPLATE
from agent_runtime.model.config import MoEConfig
from agent_runtime.model.embedded import (
    EMBEDDED_MODEL_DIR,
    EMBEDDED_MODEL_FILES,
    load_embedded_model,
)
from agent_runtime.model.tokenizer import KimiTokenizer
from agent_runtime.tools import FunctionToolset

EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "agent.json"

MAX_SHIPPED_BYTES = 25 * 1024 * 1024
"""The issue's bound on the checkpoint kept in the repository."""

KIMI_SPECIAL_TOKENS = (
    "<|im_end|>",
    "<|im_user|>",
    "<|im_assistant|>",
    "<|im_system|>",
    "<|im_middle|>",
    "<|tool_calls_section_begin|>",
    "<|tool_calls_section_end|>",
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
    "<think>",
    "</think>",
)


@pytest.fixture(scope="module")
def model() -> LocalMoEModel:
    return load_embedded_model()


def test_shipped_folder_has_the_kimi_checkpoint_layout_within_25_mb() -> None:
    for name in (*EMBEDDED_MODEL_FILES, "training_log.json", "loss.png"):
        assert (EMBEDDED_MODEL_DIR / name).is_file(), name
    total = sum(f.stat().st_size for f in EMBEDDED_MODEL_DIR.iterdir() if f.is_file())
    assert total <= MAX_SHIPPED_BYTES, f"{total / 2**20:.1f} MiB shipped"
    config = MoEConfig.from_hf(EMBEDDED_MODEL_DIR / "config.json")
    assert config.n_routed_experts > 1 and config.num_experts_per_tok >= 1
    raw = json.loads((EMBEDDED_MODEL_DIR / "config.json").read_text(encoding="utf-8"))
    assert raw["model_type"] == "kimi_k2" and raw["scoring_func"] == "sigmoid"
    tokenizer_config = json.loads(
        (EMBEDDED_MODEL_DIR / "tokenizer_config.json").read_text(encoding="utf-8")
    )
    assert isinstance(tokenizer_config.get("pat_str"), str) and tokenizer_config["pat_str"]
    template = (EMBEDDED_MODEL_DIR / "chat_template.jinja").read_text(encoding="utf-8")
    assert template == KIMI_K2_COMPACT_TEMPLATE
    log = json.loads((EMBEDDED_MODEL_DIR / "training_log.json").read_text(encoding="utf-8"))
    assert log["points"] and log["tokens"] > 0


def test_embedded_model_loads_with_its_own_tokenizer_template_and_greedy_defaults(
    model: LocalMoEModel,
) -> None:
    assert model.name == "embedded"
    assert model.format.name == "kimi_k2"
    assert model.format.template.source == KIMI_K2_COMPACT_TEMPLATE
    tokenizer = model.tokenizer
    assert isinstance(tokenizer, KimiTokenizer)
    pat_str = json.loads((EMBEDDED_MODEL_DIR / "tokenizer_config.json").read_text())["pat_str"]
    assert tokenizer.pattern == pat_str  # the checkpoint's own split, not Kimi's default
    for token in KIMI_SPECIAL_TOKENS:
        tokenizer.special_id(token)  # raises when the token is missing
    assert tokenizer.vocab_size <= model.model.config.vocab_size
    generation = json.loads((EMBEDDED_MODEL_DIR / "generation_config.json").read_text())
    assert model.defaults.temperature == 0.0  # greedy
    assert model.defaults.max_new_tokens == generation["max_new_tokens"]
    assert tokenizer.special_id("<|im_end|>") in model.stop_token_ids
    assert model.constrain  # tool calls are grammar-constrained by default


def test_embedded_model_loads_in_well_under_a_few_seconds(model: LocalMoEModel) -> None:
    """The issue's target is < 2 s (benchmarks/tool_accuracy.py reports it); this guard is loose
    because the test machine's cores are shared."""
    started = time.perf_counter()
    load_embedded_model()
    assert time.perf_counter() - started < 5.0


async def _one_turn(model: LocalMoEModel) -> str:
    async with Agent(model, [], settings=ModelSettings(max_tokens=8)) as agent:
        result = await agent.run("hello")
    assert result.usage.requests == 1 and result.usage.output_tokens <= 8
    return result.output


@pytest.mark.anyio
@pytest.mark.parametrize(
    "source", [{}, {"model": {}}, {"model": {"backend": "embedded", "dtype": "float32"}}]
)
async def test_a_config_naming_no_model_or_embedded_gets_the_embedded_model(
    source: dict[str, object],
) -> None:
    model = build_model(load_config(source))
    assert isinstance(model, LocalMoEModel) and model.name == "embedded"
    assert model.format.name == "kimi_k2"
    await _one_turn(model)  # it runs a turn (what it says is the evaluation's business)


def test_embedded_backend_options_that_do_not_fit_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="embedded model"):
        build_model(load_config({"model": {"backend": "embedded", "no_such_option": 1}}))
    with pytest.raises(UserError, match='"local" backend'):
        build_model(load_config({"model": {"backend": "embedded", "path": "elsewhere"}}))


def test_schema_backend_still_builds_for_tests() -> None:
    from agent_runtime.testing import SchemaModel

    assert isinstance(build_model(load_config({"model": {"backend": "schema"}})), SchemaModel)


def test_a_missing_checkpoint_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "embedded_model"
    broken.mkdir()
    for name in EMBEDDED_MODEL_FILES:
        if name != "model.safetensors":
            (broken / name).write_bytes((EMBEDDED_MODEL_DIR / name).read_bytes())
    monkeypatch.setattr(embedded, "EMBEDDED_MODEL_DIR", broken)
    with pytest.raises(UserError, match=r"lacks model\.safetensors.*reinstall"):
        load_embedded_model()
    with pytest.raises(UserError, match="lacks"):
        build_model(load_config({}))


def test_example_config_runs_on_the_embedded_model() -> None:
    config = load_config(EXAMPLE_CONFIG)
    assert config.model.backend == "embedded"
    assert not config.model.model_extra  # no fixed arguments of the schema test model
    model = build_model(config)
    assert isinstance(model, LocalMoEModel) and model.name == "embedded"
    names = {
        name
        for toolset in local_toolsets(config.tools, config.base_dir)
        if isinstance(toolset, FunctionToolset)
        for name in toolset.tools
    }
    assert {"days_until", "convert_temperature", "word_count"} <= names
    assert "time" in config.mcp_servers


def test_cli_run_without_a_model_runs_the_embedded_model(tmp_path: Path) -> None:
    (tmp_path / "agent.json").write_text(json.dumps({"limits": {"max_steps": 2}}))
    done = subprocess.run(
        [sys.executable, "-m", "agent_runtime.cli", "-v", "run", "--config", "agent.json", "hi"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert "agent-runtime: info: model: embedded (the config names no model" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_readme_job_runs_the_trained_model_on_real_tools() -> None:
    """The README's first command (the example agent, its local tools and mcp-server-time):
    the shipped model copies the date from the question into a schema-valid days_until call, so
    the real tool's answer is the right day count. (Its answer text and its choice of the time
    tool are what it does not yet get right: see model/embedded_model/TRAINING.md.)"""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    question = "How many days until 2027-01-01, and what time is it?"
    done = subprocess.run(
        [sys.executable, "-m", "agent_runtime.cli", "-v", "run", "--config", str(EXAMPLE_CONFIG)]
        + [question],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert "model: embedded" in done.stderr
    days = (date(2027, 1, 1) - date.today()).days
    assert f"tool days_until: {days}\n" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
