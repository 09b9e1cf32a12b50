"""A local model served by one process and driven by an agent in another.

This script starts ``agent-runtime serve-model`` (the embedded model, over the OpenAI-compatible
API on a free loopback port) as a second process, then runs an agent here whose model is that
server (``OpenAIChatModel``) and whose tool (``days_until`` from ``local_tools.py``) runs in
this process. Any OpenAI client could use the same server: ``openai.OpenAI(base_url=URL,
api_key="unused")``.

    python examples/served_model.py ["How many days until 2027-01-01?"]

Swap ``--path DIR`` into the server's command to serve another checkpoint folder.
"""

from __future__ import annotations

import subprocess
import sys

import anyio
from local_tools import days_until

from agent_runtime import Agent
from agent_runtime.backend import ModelSettings
from agent_runtime.limits import UsageLimits
from agent_runtime.protocols.openai import OpenAIChatModel

QUESTION = "How many days until 2027-01-01?"


async def ask(url: str, question: str) -> None:
    async with OpenAIChatModel(url, "embedded") as model:
        agent = Agent(
            model,
            tools=[days_until],
            # The first turn must call the tool; after that the model may answer.
            settings=ModelSettings(tool_choice="days_until", max_tokens=64),
            limits=UsageLimits(max_steps=4),
        )
        result = await agent.run(question)
    for record in result.tool_calls:
        print(f"tool {record.call.name} (id {record.call.id}): {record.result.text_content}")
    print(f"answer: {result.output}")
    usage = result.usage
    print(
        f"usage: {usage.requests} requests, {usage.input_tokens} prompt tokens "
        f"({usage.cached_tokens} from the server's prefix cache), {usage.output_tokens} generated"
    )


def main() -> None:
    question = sys.argv[1] if len(sys.argv) > 1 else QUESTION
    server = subprocess.Popen(
        [sys.executable, "-m", "agent_runtime.cli", "serve-model", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # "serving embedded at http://127.0.0.1:PORT/v1"
        if " at " not in line:
            raise SystemExit(f"the model server did not start: {line!r}")
        url = line.rsplit(" at ", 1)[1].strip()
        print(f"model server: {url}")
        anyio.run(ask, url, question)
    finally:
        server.terminate()
        server.wait(timeout=15)


if __name__ == "__main__":
    main()
