"""A2A SendMessage throughput: our node against the official a2a-sdk 1.3 server, in one run.

Both servers serve an equivalent echo agent (answer ``echo: <text>`` as a completed task with one
artifact; ours: the runtime ``Agent`` with a tiny echo ``ModelBackend``, theirs: an
``AgentExecutor``), both keep tasks in memory (``ours_sqlite`` adds our node with its default
SQLite store), and each runs under uvicorn in its own process.
The same load client (httpx, ``--concurrency`` requests in flight, blocking JSON-RPC
``SendMessage``) runs in a separate process, so its CPU does not count against the server's; on
a machine with two or more cores the server and the client are pinned to different cores.

Both servers listen on a socket made with ``IPPROTO_TCP``, so asyncio sets ``TCP_NODELAY`` on
their connections; without it every keep-alive response stalls ~40 ms on Nagle + delayed ACK,
and the benchmark would measure the socket instead of the A2A code.

Reported per server: requests/s, p50 and p99 latency, server CPU ms per request (from
``/proc``), errors; the servers are measured in interleaved rounds and the medians compared.
Then the ratios ours/theirs: throughput, and server CPU per request (the steadier number on a
machine shared with other work). The last line printed is one JSON object.

    python benchmarks/a2a_throughput.py [--requests 1500] [--rounds 3] [--concurrency 64]
        [--binding jsonrpc|rest] [--priority-boost 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = ROOT / "tests" / "a2a_interop_support"
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's helpers for server processes
from support_processes import listening_port, stop_process  # noqa: E402

SERVERS = {
    "ours": [str(SUPPORT / "our_echo_server.py"), "0", "--memory"],
    "ours_sqlite": [str(SUPPORT / "our_echo_server.py"), "0", "--store", "{tmp}"],
    "a2a_sdk": [str(SUPPORT / "sdk_echo_server.py"), "0"],
}


# --------------------------------------------------------------------------- load client


class _RawConnection:
    """A minimal HTTP/1.1 keep-alive client on one connection: far cheaper per request than
    httpx, so on a small machine the load client does not become the bottleneck it measures."""

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.head = "\r\n".join(lines) + "\r\nContent-Length: "
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader = self.reader
        assert reader is not None
        try:
            self.writer.write(f"{self.head}{len(body)}\r\n\r\n".encode() + body)
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionError("server closed the connection")
            status = int(status_line.split()[1])
            length, chunked, close = 0, False, False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
                elif name == b"connection" and b"close" in value.lower():
                    close = True
            if chunked:
                parts = []
                while True:
                    size = int((await reader.readline()).strip() or b"0", 16)
                    if size == 0:
                        await reader.readline()
                        break
                    parts.append(await reader.readexactly(size))
                    await reader.readline()
                data = b"".join(parts)
            else:
                data = await reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _load(
    url: str, binding: str, total: int, concurrency: int, warmup: int, client: str
) -> dict[str, Any]:
    from urllib.parse import urlsplit

    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        card = (await http.get(url + "/.well-known/agent-card.json")).json()
        wanted = "JSONRPC" if binding == "jsonrpc" else "HTTP+JSON"
        iface = next(i for i in card["supportedInterfaces"] if i["protocolBinding"] == wanted)
        endpoint = iface["url"].replace("localhost", "127.0.0.1")
        if binding == "rest":
            endpoint = endpoint.rstrip("/") + "/message:send"
        headers = {
            "A2A-Version": "1.0",
            "Content-Type": "application/json" if binding == "jsonrpc" else "application/a2a+json",
        }
        latencies: list[float] = []
        errors = 0
        samples: list[str] = []
        parts = urlsplit(endpoint)
        raw = [
            _RawConnection(parts.hostname or "127.0.0.1", parts.port or 80, parts.path, headers)
            for _ in range(concurrency)
        ]

        def body(i: int) -> bytes:
            message = {
                "messageId": str(uuid.uuid4()),
                "role": "ROLE_USER",
                "parts": [{"text": f"hello {i}"}],
            }
            if binding == "jsonrpc":
                payload: dict[str, Any] = {
                    "jsonrpc": "2.0",
                    "id": i,
                    "method": "SendMessage",
                    "params": {"message": message},
                }
            else:
                payload = {"message": message}
            return json.dumps(payload).encode()

        async def post(worker: int, content: bytes) -> bytes:
            if client == "raw":
                _status, data = await raw[worker].post(content)
                return data
            response = await http.post(endpoint, content=content, headers=headers)
            return response.content

        async def one(worker: int, i: int, record: bool) -> None:
            nonlocal errors
            start = time.perf_counter()
            try:
                data = json.loads(await post(worker, body(i)))
                result = data.get("result", data) if binding == "jsonrpc" else data
                state = result["task"]["status"]["state"]
                ok = state == "TASK_STATE_COMPLETED" and bool(result["task"]["artifacts"])
                problem = "" if ok else f"state {state}"
            except Exception as exc:
                ok, problem = False, repr(exc)[:200]
            if record:
                latencies.append(time.perf_counter() - start)
                if not ok:
                    errors += 1
                    if len(samples) < 3:
                        samples.append(problem)

        async def run(count: int, record: bool) -> float:
            queue = iter(range(count))

            async def worker(index: int) -> None:
                for i in queue:
                    await one(index, i, record)

            start = time.perf_counter()
            await asyncio.gather(*(worker(w) for w in range(concurrency)))
            return time.perf_counter() - start

        await run(warmup, record=False)
        wall = await run(total, record=True)
        for connection in raw:
            connection.close()
    latencies.sort()
    return {
        "requests": total,
        "wall_s": round(wall, 3),
        "rps": round(total / wall, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2),
        "errors": errors,
        "error_samples": samples,
    }


# --------------------------------------------------------------------------- orchestration


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _pin(cpu: int | None, boost: int = 0) -> Any:
    """A ``preexec_fn``: run the child on one core, optionally at a higher priority."""

    def apply() -> None:
        if cpu is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {cpu})
        if boost:
            try:
                os.nice(-boost)
            except OSError:
                pass  # not permitted: run at normal priority

    return apply


def _measure(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = cpus[0] if len(cpus) >= 2 else None
    client_cpu = cpus[1] if len(cpus) >= 2 else None
    command = [sys.executable] + [
        a.replace("{tmp}", str(tmp / f"{name}.sqlite3")) for a in SERVERS[name]
    ]
    server = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=_pin(server_cpu, args.priority_boost),
    )
    try:
        url = f"http://127.0.0.1:{listening_port(server, f'{name} server')}"
        time.sleep(0.5)
        cpu_before = _cpu_seconds(server.pid)
        load = subprocess.run(
            [
                sys.executable,
                __file__,
                "--load",
                url,
                "--binding",
                args.binding,
                "--requests",
                str(args.requests),
                "--concurrency",
                str(args.concurrency),
                "--warmup",
                str(args.warmup),
                "--client",
                args.client,
            ],
            capture_output=True,
            text=True,
            preexec_fn=_pin(client_cpu, args.priority_boost),
            check=False,
        )
        cpu_after = _cpu_seconds(server.pid)
        if load.returncode != 0:
            raise RuntimeError(f"load client failed against {name}: {load.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(load.stdout.strip().splitlines()[-1])
        # The warmup requests are inside the CPU window too: divide by everything sent.
        sent = args.requests + args.warmup
        result["server_cpu_ms_per_req"] = round(1000 * (cpu_after - cpu_before) / sent, 3)
        return result
    finally:
        stop_process(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500, help="per server per round")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--binding", choices=["jsonrpc", "rest"], default="jsonrpc")
    parser.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="load client: a minimal keep-alive HTTP/1.1 client (default; cheap enough that "
        "the servers are what is measured) or httpx",
    )
    parser.add_argument(
        "--priority-boost",
        type=int,
        default=0,
        metavar="N",
        help="run servers and load client at nice -N (a machine busy with other work "
        "otherwise decides the numbers; needs privileges)",
    )
    parser.add_argument(
        "--servers",
        default="ours,a2a_sdk,ours_sqlite",
        help="comma-separated: " + ",".join(SERVERS),
    )
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.load:
        result = asyncio.run(
            _load(
                args.load,
                args.binding,
                args.requests,
                args.concurrency,
                args.warmup,
                args.client,
            )
        )
        print(json.dumps(result))
        return

    import tempfile

    names = [n for n in args.servers.split(",") if n]
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        # Rounds interleave the servers, so a change in the machine's background load hits
        # both sides alike; the medians over rounds are what gets compared.
        for index in range(args.rounds):
            for name in names:
                r = _measure(name, args, Path(tmp) / f"round{index}")
                rounds[name].append(r)
                print(
                    f"round {index + 1} {name:12s} {r['rps']:8.1f} req/s  "
                    f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                    f"server CPU {r['server_cpu_ms_per_req']:.3f} ms/req  errors {r['errors']}",
                    flush=True,
                )
    results = {name: _median_result(runs) for name, runs in rounds.items()}
    for name, r in results.items():
        print(
            f"median  {name:12s} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
            f"p99 {r['p99_ms']:7.2f} ms  server CPU {r['server_cpu_ms_per_req']:.3f} ms/req"
        )
    summary: dict[str, Any] = {
        "benchmark": "a2a_throughput",
        "binding": args.binding,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "priority_boost": args.priority_boost,
        "client": args.client,
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "results": results,
    }
    sdk = results.get("a2a_sdk")
    for name in ("ours", "ours_sqlite"):
        if name in results and sdk is not None:
            ours = results[name]
            rps_ratio = ours["rps"] / sdk["rps"]
            cpu_ratio = sdk["server_cpu_ms_per_req"] / ours["server_cpu_ms_per_req"]
            summary[f"ratio_rps_{name}_vs_sdk"] = round(rps_ratio, 2)
            summary[f"ratio_cpu_efficiency_{name}_vs_sdk"] = round(cpu_ratio, 2)
            print(
                f"{name} / a2a-sdk: throughput {rps_ratio:.2f}x (target >= 2x), "
                f"server CPU per request {cpu_ratio:.2f}x less"
            )
    print(json.dumps(summary))


def _median_result(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("rps", "p50_ms", "p99_ms", "server_cpu_ms_per_req")
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in runs), 3) for k in keys}
    out["errors"] = sum(r["errors"] for r in runs)
    out["error_samples"] = [s for r in runs for s in r.get("error_samples", [])][:3]
    out["rps_per_round"] = [r["rps"] for r in runs]
    return out


if __name__ == "__main__":
    main()
