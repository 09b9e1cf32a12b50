"""Two agents talking over A2A on loopback: ``python examples/two_agents.py [QUESTION]``.

Agent B, the warehouse, is served as an A2A node (``run_a2a_node``, in-memory task store) by a
second process on a free loopback port; it answers stock questions with its own tool,
``stock_level``. Agent A, the front desk, runs here: its only tool is B, offered through an
``A2APeerToolset`` as ``ask_warehouse``. A's model delegates the user's question to B and
answers with what B said. The script prints the exchange and then stops B (SIGTERM: uvicorn
shuts down, running tasks are cancelled, the process exits 0).

Both models are ``FunctionModel``s, deterministic functions of the conversation, not LLMs: the
embedded model is too weak to delegate reliably, and a deterministic model makes the output
checkable (``tests/test_examples_two_agents.py`` runs this command). Swap in any
``ModelBackend`` (the embedded model, ``OpenAIChatModel``) to let a real model decide; the A2A
part stays the same.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import anyio

from agent_runtime import Agent, tool
from agent_runtime.protocols.a2a.peer import A2APeerToolset
from agent_runtime.testing import FunctionModel
from agent_runtime.types import Message, ToolCall, ToolResultMessage, ToolSpec, UserMessage

QUESTION = "How many crates of apples are left?"
STOCK = {"apples": 42, "pears": 7, "plums": 0}


@tool(read_only=True)
def stock_level(item: str) -> int:
    """The number of crates of an item in the warehouse.

    Args:
        item: The item, e.g. apples.
    """
    return STOCK.get(item, 0)


def _last_question(messages: list[Message]) -> tuple[str, list[ToolResultMessage]]:
    """The last user message and the tool results that came after it."""
    last = max(i for i, m in enumerate(messages) if isinstance(m, UserMessage))
    question = messages[last]
    assert isinstance(question, UserMessage)
    results = [m for m in messages[last + 1 :] if isinstance(m, ToolResultMessage)]
    return str(question.content), results


def warehouse_model(messages: list[Message], tools: list[ToolSpec]) -> str | ToolCall:
    """B: look the item up with ``stock_level``, then answer from what it returned."""
    question, results = _last_question(messages)
    item = next((name for name in STOCK if name in question.lower()), None)
    if item is None:
        return f"I only keep {', '.join(STOCK)}."
    if not results:
        return ToolCall.of("stock_level", {"item": item})
    count = results[-1].result.text_content
    return f"{count} crates of {item} are left (stock_level says {count})."


def front_desk_model(messages: list[Message], tools: list[ToolSpec]) -> str | ToolCall:
    """A: pass the user's question to the warehouse agent, then relay its answer."""
    question, results = _last_question(messages)
    if not results:
        return ToolCall.of("ask_warehouse", {"message": question})
    return f"The warehouse agent says: {results[-1].result.text_content}"


def serve_warehouse() -> None:
    """Agent B as an A2A node on a free loopback port; prints ``LISTENING <port>``."""
    from agent_runtime.protocols.a2a.serve import run_a2a_node

    # uvicorn turns SIGTERM into a graceful shutdown and then raises the signal again for the
    # handler that was there before; this one lets that end as a normal exit (status 0).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)

    warehouse = Agent(
        FunctionModel(warehouse_model, name="warehouse-rules"),
        tools=[stock_level],
        name="warehouse",
        description="Knows how many crates of each fruit are in stock.",
    )
    run_a2a_node(
        {"a2a": {"store": {"kind": "memory"}}},
        warehouse,
        "127.0.0.1",
        0,
        on_listening=lambda port: print(f"LISTENING {port}", flush=True),
    )


async def ask(url: str, question: str) -> None:
    """Agent A: delegates ``question`` to the warehouse at ``url`` and prints the exchange."""
    async with A2APeerToolset("warehouse", url, timeout_s=60) as peer:
        front_desk = Agent(
            FunctionModel(front_desk_model, name="front-desk-rules"),
            tools=[peer],
            name="front desk",
        )
        result = await front_desk.run(question)
    print(f"user -> A: {question}")
    for record in result.tool_calls:
        print(f"A -> B ({record.call.name}): {record.call.arguments}")
        flag = " (error)" if record.result.is_error else ""
        print(f"B -> A{flag}: {record.result.text_content}")
    print(f"A -> user: {result.output}")


def main() -> int:
    if sys.argv[1:2] == ["--serve-warehouse"]:
        serve_warehouse()
        return 0
    question = sys.argv[1] if len(sys.argv) > 1 else QUESTION
    node = subprocess.Popen(
        [sys.executable, __file__, "--serve-warehouse"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert node.stdout is not None
        line = node.stdout.readline()
        found = re.fullmatch(r"LISTENING (\d+)\s*", line)
        if found is None:
            raise SystemExit(f"agent B did not start: {line!r}")
        url = f"http://127.0.0.1:{found.group(1)}"
        print(f"agent B (warehouse) serves A2A at {url}")
        anyio.run(ask, url, question)
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            code = node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()
            code = node.wait()
    print(f"agent B stopped (exit status {code})")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
