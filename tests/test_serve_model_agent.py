"""An agent here driving the embedded model served by another agent-runtime process
(``agent-runtime serve-model`` without ``--path``), through our own ``OpenAIChatModel``, with
a tool that runs in this process; and the example that does the same as its own command."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from serve_model_support import serve_model

from agent_runtime import Agent, tool
from agent_runtime.backend import ModelSettings
from agent_runtime.errors import ModelBackendError
from agent_runtime.events import TextDeltaEvent, ToolCallFinished
from agent_runtime.limits import UsageLimits
from agent_runtime.protocols.openai import ModelHTTPError, OpenAIChatModel
from agent_runtime.types import UserMessage

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "served_model.py"
KEY_ENV = "AGENT_RUNTIME_TEST_SERVED_KEY"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """The embedded model served by another process, behind an API key."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(KEY_ENV, "s3cret-key")
        with serve_model("--api-key-env", KEY_ENV) as url:
            yield url


async def test_an_agent_drives_the_served_model_and_runs_its_tool_here(base_url: str) -> None:
    asked: list[date] = []

    @tool(read_only=True)
    def days_until(day: date) -> int:
        """Count the days from today until a date.

        Args:
            day: The date to count to (ISO format, e.g. 2027-01-01).
        """
        asked.append(day)
        return 26

    async with OpenAIChatModel(base_url, "embedded", api_key_env=KEY_ENV) as model:
        agent = Agent(
            model,
            tools=[days_until],
            settings=ModelSettings(tool_choice="days_until", max_tokens=64),
            limits=UsageLimits(max_steps=4),
        )
        events = [event async for event in agent.run_stream("How many days until 2027-01-01?")]
    finished = [e.record for e in events if isinstance(e, ToolCallFinished)]
    text = "".join(e.text for e in events if isinstance(e, TextDeltaEvent))
    result = events[-1].result  # type: ignore[union-attr]
    assert asked  # the tool ran in this process, called by the model in the other one
    assert finished[0].call.name == "days_until"
    assert re.fullmatch(r"functions\.days_until:\d+", finished[0].call.id)
    assert finished[0].result.is_error is False
    assert result.output and result.output.strip() in text  # streamed as it was made
    assert result.usage.requests >= 2
    # The second step's prompt starts with the first: the server's prefix cache served it.
    assert result.usage.cached_tokens > 0


async def test_a_client_without_the_key_is_refused(base_url: str) -> None:
    async with OpenAIChatModel(base_url, "embedded", api_key="wrong", max_retries=0) as model:
        with pytest.raises(ModelHTTPError) as caught:
            await model.complete([UserMessage(content="Hi")], [], ModelSettings(max_tokens=2))
    assert caught.value.status_code == 401
    assert "API key" in caught.value.detail


async def test_a_request_the_server_refuses_is_a_model_error_with_its_message(
    base_url: str,
) -> None:
    async with OpenAIChatModel(base_url, "no-such-model", api_key_env=KEY_ENV) as model:
        with pytest.raises(ModelBackendError, match="serves 'embedded'"):
            await model.complete([UserMessage(content="Hi")], [], ModelSettings(max_tokens=2))


def test_the_served_model_example_runs_as_its_own_command() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "How many days until 2027-01-01?"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert re.search(r"model server: http://127\.0\.0\.1:\d+/v1", out)
    assert re.search(r"tool days_until \(id functions\.days_until:0\): -?\d+", out)
    assert "answer: " in out
    cached = re.search(r"\((\d+) from the server's prefix cache\)", out)
    assert cached is not None and int(cached.group(1)) > 0
