"""What our MCP path costs over the raw SDK: dispatcher + ``MCPToolset`` vs ``mcp.Client``.

Two copies of one trivial stdio server (``_mcp_echo_server.py``, one ``echo`` tool) are
started, one per client:

- raw: ``mcp.Client(StdioServerParameters(...)).call_tool("echo", ...)``;
- ours: ``Dispatcher([MCPToolset(...)]).dispatch([ToolCall])``, the path an ``Agent`` takes
  (argument parsing and schema validation, policy, timeout, result conversion and size cap).

Sequential: ``--calls`` calls one after the other, run in interleaved blocks (raw, ours, raw,
...) so machine noise hits both alike; per-call latency medians. Concurrent: ``--calls`` calls
issued at once (raw: one task each, all in flight together; ours: one ``dispatch`` of all the
calls with the dispatcher's default config, which keeps at most ``max_concurrency`` in flight),
``--rounds`` times alternately; median throughput. Both sides use default settings throughout.

    python benchmarks/mcp_overhead.py [--calls 1000] [--rounds 9] [--blocks 50]

Targets: sequential median at most 1.05x raw; concurrent throughput at least raw's.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from agent_runtime.dispatcher import DispatchConfig, Dispatcher
from agent_runtime.protocols.mcp.config import StdioServerConfig
from agent_runtime.protocols.mcp.toolset import MCPToolset
from agent_runtime.types import ToolCall

SERVER = str(Path(__file__).with_name("_mcp_echo_server.py"))
ARGS = {"text": "hello"}


async def _raw_sequential(client: Client, n: int, out: list[float]) -> None:
    for _ in range(n):
        t0 = time.perf_counter()
        result = await client.call_tool("echo", ARGS)
        out.append(time.perf_counter() - t0)
        assert not result.is_error


async def _ours_sequential(dispatcher: Dispatcher, n: int, out: list[float]) -> None:
    for i in range(n):
        call = ToolCall.of("bench__echo", ARGS, id=f"s{i}")
        t0 = time.perf_counter()
        (record,) = await dispatcher.dispatch([call])
        out.append(time.perf_counter() - t0)
        assert not record.result.is_error, record.result.text_content


async def _raw_concurrent(client: Client, n: int) -> float:
    failures: list[Any] = []

    async def one() -> None:
        result = await client.call_tool("echo", ARGS)
        if result.is_error:
            failures.append(result)

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    elapsed = time.perf_counter() - t0
    assert not failures
    return elapsed


async def _ours_concurrent(dispatcher: Dispatcher, n: int) -> float:
    calls = [ToolCall.of("bench__echo", ARGS, id=f"c{i}") for i in range(n)]
    t0 = time.perf_counter()
    records = await dispatcher.dispatch(calls)
    elapsed = time.perf_counter() - t0
    bad = [r for r in records if r.result.is_error]
    assert not bad, bad[0].result.text_content
    return elapsed


async def main(calls: int, rounds: int, blocks: int) -> dict[str, Any]:
    params = StdioServerParameters(command=sys.executable, args=[SERVER])
    toolset = MCPToolset("bench", StdioServerConfig(command=sys.executable, args=[SERVER]))
    # The agent's defaults throughout (its concurrency cap included): what an Agent runs.
    dispatcher = Dispatcher([toolset], DispatchConfig())
    async with Client(params) as raw, dispatcher:
        # Warm both paths (imports, schema compilation, server-side caches).
        await _raw_sequential(raw, 50, [])
        await _ours_sequential(dispatcher, 50, [])

        raw_lat: list[float] = []
        ours_lat: list[float] = []
        per_block = max(1, calls // blocks)
        for _ in range(blocks):
            await _raw_sequential(raw, per_block, raw_lat)
            await _ours_sequential(dispatcher, per_block, ours_lat)

        raw_walls: list[float] = []
        ours_walls: list[float] = []
        for r in range(rounds):
            if r % 2 == 0:
                raw_walls.append(await _raw_concurrent(raw, calls))
                ours_walls.append(await _ours_concurrent(dispatcher, calls))
            else:
                ours_walls.append(await _ours_concurrent(dispatcher, calls))
                raw_walls.append(await _raw_concurrent(raw, calls))

    raw_seq = statistics.median(raw_lat)
    ours_seq = statistics.median(ours_lat)
    raw_tput = calls / statistics.median(raw_walls)
    ours_tput = calls / statistics.median(ours_walls)
    return {
        "benchmark": "mcp_overhead",
        "calls": calls,
        "sequential_calls_each": len(raw_lat),
        "concurrent_rounds": rounds,
        "raw_seq_median_ms": round(raw_seq * 1e3, 4),
        "ours_seq_median_ms": round(ours_seq * 1e3, 4),
        "seq_ratio": round(ours_seq / raw_seq, 4),
        "seq_target_max_ratio": 1.05,
        "raw_concurrent_calls_per_s": round(raw_tput, 1),
        "ours_concurrent_calls_per_s": round(ours_tput, 1),
        "concurrent_throughput_ratio": round(ours_tput / raw_tput, 4),
        "concurrent_target_min_ratio": 1.0,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--blocks", type=int, default=50)
    ns = parser.parse_args()
    figures = anyio.run(main, ns.calls, ns.rounds, ns.blocks)
    print(
        f"sequential: raw {figures['raw_seq_median_ms']:.3f} ms/call, "
        f"ours {figures['ours_seq_median_ms']:.3f} ms/call -> {figures['seq_ratio']:.3f}x raw "
        f"(target <= 1.05x)"
    )
    print(
        f"concurrent ({ns.calls} at once): raw {figures['raw_concurrent_calls_per_s']:.0f} calls/s, "
        f"ours {figures['ours_concurrent_calls_per_s']:.0f} calls/s -> "
        f"{figures['concurrent_throughput_ratio']:.3f}x raw throughput (target >= 1.0x)"
    )
    print(json.dumps(figures))
