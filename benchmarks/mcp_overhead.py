"""What our MCP path costs over the raw SDK: dispatcher + ``MCPToolset`` vs ``mcp.Client``.

Copies of one trivial stdio server (``_mcp_echo_server.py``, one ``echo`` tool) are started,
one per client:

- raw: ``mcp.Client(StdioServerParameters(...)).call_tool("echo", ...)``;
- ours: ``Dispatcher([MCPToolset(...)]).dispatch([ToolCall])``, the path an ``Agent`` takes
  (argument parsing and schema validation, policy, timeout, result conversion and size cap);
- control: a second raw client, measured exactly like the first (an A/A comparison: the ratio
  it gets is this machine's noise floor for the sequential figure).

Sequential: ``--calls`` calls per client in each of ``--seq-rounds`` rounds. Each round starts
fresh servers (which core a server process lands on moves its latency by several percent for
hundreds of calls at a time, so one pair of processes is not a fair sample) and runs the calls
in interleaved blocks of ``--block`` whose order rotates (raw, ours, control; ours, control,
raw; ...), so neither machine noise nor position favours a side. Latencies of all rounds are
pooled; ratios are of pooled medians. Concurrent: ``--calls`` calls issued at once (raw: one
task each, all in flight together; ours: one ``dispatch`` of all the calls with the
dispatcher's default config, which keeps at most ``max_concurrency`` in flight), ``--rounds``
times alternately; median throughput. Both sides use default settings throughout.

    python benchmarks/mcp_overhead.py [--calls 1000] [--seq-rounds 5] [--block 10] [--rounds 9]

Targets: sequential median at most 1.05x raw; concurrent throughput at least raw's.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
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
    # Built before the loop, as the raw side's arguments are: what is measured is running a
    # call the model produced, not producing it (each call has its own id, as a model's do).
    calls = [ToolCall.of("bench__echo", ARGS, id=f"s{i}") for i in range(n)]
    for call in calls:
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


_Runner = Callable[[int, list[float]], Awaitable[None]]


async def _sequential_round(calls: int, block: int, lat: dict[str, list[float]]) -> None:
    """One round on fresh servers: raw, ours and control in rotating interleaved blocks."""
    params = StdioServerParameters(command=sys.executable, args=[SERVER])
    toolset = MCPToolset("bench", StdioServerConfig(command=sys.executable, args=[SERVER]))
    dispatcher = Dispatcher([toolset], DispatchConfig())
    async with Client(params) as raw, Client(params) as control, dispatcher:
        runners: list[tuple[str, _Runner]] = [
            ("raw", lambda n, out: _raw_sequential(raw, n, out)),
            ("ours", lambda n, out: _ours_sequential(dispatcher, n, out)),
            ("control", lambda n, out: _raw_sequential(control, n, out)),
        ]
        for _, run in runners:  # warm up (imports, schema compilation, server-side caches)
            await run(50, [])
        for index in range(max(1, calls // block)):
            shift = index % len(runners)
            for name, run in runners[shift:] + runners[:shift]:
                await run(block, lat[name])


async def _concurrent(calls: int, rounds: int) -> tuple[list[float], list[float]]:
    params = StdioServerParameters(command=sys.executable, args=[SERVER])
    toolset = MCPToolset("bench", StdioServerConfig(command=sys.executable, args=[SERVER]))
    # The agent's defaults throughout (its concurrency cap included): what an Agent runs.
    dispatcher = Dispatcher([toolset], DispatchConfig())
    raw_walls: list[float] = []
    ours_walls: list[float] = []
    async with Client(params) as raw, dispatcher:
        await _raw_sequential(raw, 50, [])
        await _ours_sequential(dispatcher, 50, [])
        for r in range(rounds):
            if r % 2 == 0:
                raw_walls.append(await _raw_concurrent(raw, calls))
                ours_walls.append(await _ours_concurrent(dispatcher, calls))
            else:
                ours_walls.append(await _ours_concurrent(dispatcher, calls))
                raw_walls.append(await _raw_concurrent(raw, calls))
    return raw_walls, ours_walls


async def main(calls: int, seq_rounds: int, block: int, rounds: int) -> dict[str, Any]:
    lat: dict[str, list[float]] = {"raw": [], "ours": [], "control": []}
    round_ratios: list[float] = []
    for _ in range(seq_rounds):
        first = {name: len(values) for name, values in lat.items()}
        await _sequential_round(calls, block, lat)
        round_ratios.append(
            statistics.median(lat["ours"][first["ours"] :])
            / statistics.median(lat["raw"][first["raw"] :])
        )
    raw_walls, ours_walls = await _concurrent(calls, rounds)

    raw_seq = statistics.median(lat["raw"])
    ours_seq = statistics.median(lat["ours"])
    control_seq = statistics.median(lat["control"])
    raw_tput = calls / statistics.median(raw_walls)
    ours_tput = calls / statistics.median(ours_walls)
    return {
        "benchmark": "mcp_overhead",
        "calls": calls,
        "sequential_rounds": seq_rounds,
        "sequential_calls_each": len(lat["raw"]),
        "concurrent_rounds": rounds,
        "raw_seq_median_ms": round(raw_seq * 1e3, 4),
        "ours_seq_median_ms": round(ours_seq * 1e3, 4),
        "control_seq_median_ms": round(control_seq * 1e3, 4),
        "seq_ratio": round(ours_seq / raw_seq, 4),
        "seq_ratio_per_round": [round(r, 4) for r in round_ratios],
        "control_seq_ratio": round(control_seq / raw_seq, 4),
        "seq_target_max_ratio": 1.05,
        "raw_concurrent_calls_per_s": round(raw_tput, 1),
        "ours_concurrent_calls_per_s": round(ours_tput, 1),
        "concurrent_throughput_ratio": round(ours_tput / raw_tput, 4),
        "concurrent_target_min_ratio": 1.0,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--seq-rounds", type=int, default=5)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=9)
    ns = parser.parse_args()
    figures = anyio.run(main, ns.calls, ns.seq_rounds, ns.block, ns.rounds)
    print(
        f"sequential: raw {figures['raw_seq_median_ms']:.3f} ms/call, "
        f"ours {figures['ours_seq_median_ms']:.3f} ms/call -> {figures['seq_ratio']:.3f}x raw "
        f"(target <= 1.05x); control (raw vs raw) {figures['control_seq_ratio']:.3f}x; "
        f"per round {figures['seq_ratio_per_round']}"
    )
    print(
        f"concurrent ({ns.calls} at once): raw {figures['raw_concurrent_calls_per_s']:.0f} calls/s, "
        f"ours {figures['ours_concurrent_calls_per_s']:.0f} calls/s -> "
        f"{figures['concurrent_throughput_ratio']:.3f}x raw throughput (target >= 1.0x)"
    )
    print(json.dumps(figures))
