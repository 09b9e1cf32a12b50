"""A2A SendMessage throughput: our node against the official SDKs' servers, in one run.

The servers serve an equivalent echo agent (answer ``echo: <text>`` as a completed task with one
artifact; ours: the runtime ``Agent`` with a tiny echo ``ModelBackend``; the official Python
``a2a-sdk`` 1.3: an ``AgentExecutor``; the official JS ``@a2a-js/sdk``: its ``AgentExecutor`` on
express, run by the Node 22 binary from ``tests/node_modules`` with ``NODE_ENV=production``),
all keep tasks in memory (``ours_sqlite`` adds our node with its default SQLite store, and
``ours_postgres`` with the PostgreSQL store when ``--postgres-dsn`` names a database, or
``--postgres`` starts a throwaway cluster), and each runs in its own process (the Python ones
under uvicorn).
The same load client (a minimal keep-alive HTTP/1.1 client, or httpx, ``--concurrency``
requests in flight, blocking ``SendMessage``) runs in a separate process, so its CPU does not
count against the server's; on a machine with two or more cores the server and the client are
pinned to different cores.

The Python servers listen on a socket made with ``IPPROTO_TCP``, so asyncio sets
``TCP_NODELAY`` on their connections (Node's http server sets it by default); without it every
keep-alive response stalls ~40 ms on Nagle + delayed ACK, and the benchmark would measure the
socket instead of the A2A code.

Each server first gets ``--warmup`` requests (a load run of their own: Node's JIT needs a few
thousand to settle), then the measured run. Reported per server: requests/s, p50 and p99
latency, server CPU ms per request (from ``/proc``, all the server's threads, over the measured
run only; for ``ours_postgres`` the node's alone, not PostgreSQL's), errors; the servers are
measured in interleaved rounds and the medians compared. Then the ratios of each of our rows to
each official server, side by side: throughput (``ratio_rps_ours_vs_sdk``, target >= 2;
``ratio_rps_ours_vs_js``, target >= 1.5) and server CPU per request (the steadier number on a
machine shared with other work). The last line printed is one JSON object.

``--tracing`` adds ``ours_traced``: our node with the runtime's telemetry on (the OpenTelemetry
SDK recording every span and metric in an in-memory exporter), compared with ``ours`` (no SDK):
``ratio_cpu_tracing_on_vs_off`` (server CPU per request; target <= 1.10) and
``ratio_time_tracing_on_vs_off`` (inverse throughput).

    python benchmarks/a2a_throughput.py [--requests 1500] [--rounds 3] [--concurrency 64]
        [--binding jsonrpc|rest] [--servers ours,a2a_sdk,js_sdk,ours_sqlite] [--tracing]
        [--postgres | --postgres-dsn postgresql://USER@HOST:PORT/DB] [--priority-boost 10]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
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
from a2a_interop_support.processes import BUNDLED_NODE, JS_ECHO_SERVER  # noqa: E402
from support_processes import listening_port, stop_process  # noqa: E402

OUR_SERVER = str(SUPPORT / "our_echo_server.py")
# Each server's command line; ``{python}``, ``{node}``, ``{sqlite}`` (a fresh file per run) and
# ``{postgres}`` (the --postgres-dsn database) are filled in per run.
SERVERS = {
    "ours": ["{python}", OUR_SERVER, "0", "--memory"],
    "ours_sqlite": ["{python}", OUR_SERVER, "0", "--store", "{sqlite}"],
    "ours_postgres": ["{python}", OUR_SERVER, "0", "--store", "{postgres}"],
    # Our node as "ours", with tracing and metrics on (OpenTelemetry SDK, in-memory exporter).
    "ours_traced": ["{python}", __file__, "--serve-traced"],
    "a2a_sdk": ["{python}", str(SUPPORT / "sdk_echo_server.py"), "0"],
    # The interop tests' JS echo server: the same agent script, InMemoryTaskStore, no logging.
    "js_sdk": ["{node}", str(JS_ECHO_SERVER), "0"],
}
# The official SDKs' servers, and the issue's throughput target for our node against each.
OFFICIAL = {"a2a_sdk": ("sdk", 2.0), "js_sdk": ("js", 1.5)}
OURS = ("ours", "ours_sqlite", "ours_postgres")
# Tracing on may cost at most this much over tracing off (server CPU per request).
TRACING_BOUND = 1.10


def _serve_traced() -> None:
    """Serve our echo node as ``our_echo_server.py --memory`` does, with the runtime's telemetry
    configured to record every span and metric in memory (spans exported as they end)."""
    from a2a_interop_support.echo_model import EchoModel
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import agent_runtime.telemetry
    from agent_runtime.agent import Agent
    from agent_runtime.protocols.a2a.push import PushConfig
    from agent_runtime.protocols.a2a.serve import serve
    from agent_runtime.protocols.a2a.server import create_a2a_app
    from agent_runtime.protocols.a2a.store import InMemoryTaskStore

    agent_runtime.telemetry.configure(
        span_exporter=InMemorySpanExporter(), metric_reader=InMemoryMetricReader()
    )
    agent = Agent(EchoModel(), name="Echo Agent", description="Echoes text back (agent-runtime)")
    app = create_a2a_app(agent, store=InMemoryTaskStore(), push=PushConfig(allow_private_urls=True))
    serve(app, "127.0.0.1", 0, on_listening=lambda port: print(f"LISTENING {port}", flush=True))


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


def _server_command(name: str, args: argparse.Namespace, tmp: Path) -> list[str]:
    if name == "js_sdk" and not BUNDLED_NODE.exists():
        raise SystemExit(f"{BUNDLED_NODE} is missing: run `npm ci` in tests/ first")
    if name == "ours_postgres" and not args.postgres_dsn:
        raise SystemExit("ours_postgres needs --postgres-dsn DSN or --postgres")
    values = {
        "{python}": sys.executable,
        # Node 22 as the issue asks, also where the system node is older.
        "{node}": str(BUNDLED_NODE),
        "{sqlite}": str(tmp / f"{name}.sqlite3"),
        "{postgres}": args.postgres_dsn or "",
    }
    return [values.get(a, a) for a in SERVERS[name]]


def _measure(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = cpus[0] if len(cpus) >= 2 else None
    client_cpu = cpus[1] if len(cpus) >= 2 else None
    tmp.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        _server_command(name, args, tmp),
        cwd=ROOT,  # node finds @a2a-js/sdk from the script's folder upwards
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        # Production mode for express; Python servers print nothing per request either way.
        env={**os.environ, "NODE_ENV": "production"},
        preexec_fn=_pin(server_cpu, args.priority_boost),
    )
    try:
        url = f"http://127.0.0.1:{listening_port(server, f'{name} server')}"
        time.sleep(0.5)

        def load(requests: int) -> dict[str, Any]:
            run = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--load",
                    url,
                    "--binding",
                    args.binding,
                    "--requests",
                    str(requests),
                    "--concurrency",
                    str(args.concurrency),
                    "--warmup",
                    "0",
                    "--client",
                    args.client,
                ],
                capture_output=True,
                text=True,
                preexec_fn=_pin(client_cpu, args.priority_boost),
                check=False,
            )
            if run.returncode != 0:
                raise RuntimeError(f"load client failed against {name}: {run.stderr[-2000:]}")
            parsed: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
            return parsed

        # The warmup is a load run of its own, outside the CPU window: a JIT (Node's) or cache
        # still warming up would otherwise weigh on the measured CPU per request.
        warmup_errors = load(args.warmup)["errors"] if args.warmup > 0 else 0
        cpu_before = _cpu_seconds(server.pid)
        result = load(args.requests)
        cpu_after = _cpu_seconds(server.pid)
        result["warmup_errors"] = warmup_errors
        result["server_cpu_ms_per_req"] = round(1000 * (cpu_after - cpu_before) / args.requests, 3)
        return result
    finally:
        stop_process(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500, help="per server per round")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--warmup",
        type=int,
        default=3000,
        help="requests per server before each measured run, outside its CPU window (Node's JIT "
        "needs a few thousand requests to settle; too few favours the Python servers)",
    )
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
        default="ours,a2a_sdk,js_sdk,ours_sqlite",
        help="comma-separated: " + ",".join(SERVERS) + " (ours_postgres is added by itself "
        "when --postgres-dsn is given)",
    )
    parser.add_argument(
        "--postgres-dsn",
        metavar="DSN",
        help="also measure our node on the PostgreSQL store in this database "
        "(postgresql://USER@HOST:PORT/DB; its tasks are kept: use a throwaway database)",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also measure our node on the PostgreSQL store, in a throwaway cluster started "
        "like the tests' (Debian's binaries; $A2A_TEST_POSTGRES_DSN instead when set)",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="also measure our node with tracing on (ours_traced: OpenTelemetry SDK, in-memory "
        f"exporter) against ours (off); target: at most {TRACING_BOUND:g}x its CPU per request",
    )
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--serve-traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve_traced:
        _serve_traced()
        return

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

    if args.postgres and not args.postgres_dsn:
        from a2a_support.postgres import server_dsn  # the tests' throwaway cluster

        args.postgres_dsn = server_dsn()
    names = [n for n in args.servers.split(",") if n]
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        parser.error(f"unknown servers {unknown}; known: {', '.join(SERVERS)}")
    if args.postgres_dsn and "ours_postgres" not in names:
        names.append("ours_postgres")
    if args.tracing:
        names += [n for n in ("ours", "ours_traced") if n not in names]
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        # Rounds interleave the servers, so a change in the machine's background load hits
        # all of them alike; the medians over rounds are what gets compared.
        for index in range(args.rounds):
            for name in names:
                r = _measure(name, args, Path(tmp) / f"round{index}")
                rounds[name].append(r)
                print(f"round {index + 1} {_row(name, r)}  errors {r['errors']}", flush=True)
    results = {name: _median_result(runs) for name, runs in rounds.items()}
    print(f"median over {args.rounds} round(s), concurrency {args.concurrency}, {args.binding}:")
    for name, r in results.items():
        print(f"  {_row(name, r)}")
    summary: dict[str, Any] = {
        "benchmark": "a2a_throughput",
        "binding": args.binding,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "priority_boost": args.priority_boost,
        "client": args.client,
        "node": _node_version() if "js_sdk" in results else None,
        # uvicorn's HTTP parser for the Python servers ("auto": httptools when installed).
        "uvicorn_http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "results": results,
    }
    summary.update(_ratios(results))
    print(json.dumps(summary))


def _row(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name:13s} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
        f"p99 {r['p99_ms']:7.2f} ms  server CPU {r['server_cpu_ms_per_req']:.3f} ms/req"
    )


def _ratios(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each of our rows against each official server: throughput and CPU per request ratios
    (printed side by side), and whether the issue's throughput targets hold."""
    out: dict[str, Any] = {}
    targets: dict[str, bool] = {}
    for name in (n for n in OURS if n in results):
        ours = results[name]
        line = []
        for official, (short, target) in OFFICIAL.items():
            if official not in results:
                continue
            theirs = results[official]
            rps_ratio = ours["rps"] / theirs["rps"]
            cpu_ratio = theirs["server_cpu_ms_per_req"] / ours["server_cpu_ms_per_req"]
            out[f"ratio_rps_{name}_vs_{short}"] = round(rps_ratio, 2)
            out[f"ratio_cpu_efficiency_{name}_vs_{short}"] = round(cpu_ratio, 2)
            if name == "ours":
                targets[f"ratio_rps_ours_vs_{short} >= {target:g}"] = rps_ratio >= target
            line.append(
                f"vs {official}: throughput {rps_ratio:5.2f}x (target >= {target:g}x), "
                f"CPU/request theirs/ours {cpu_ratio:5.2f}x"
            )
        if line:
            print(f"{name:13s} " + " | ".join(line))
    traced, untraced = results.get("ours_traced"), results.get("ours")
    if traced is not None and untraced is not None:
        cpu = traced["server_cpu_ms_per_req"] / untraced["server_cpu_ms_per_req"]
        rps = untraced["rps"] / traced["rps"]
        out["ratio_cpu_tracing_on_vs_off"] = round(cpu, 3)
        out["ratio_time_tracing_on_vs_off"] = round(rps, 3)
        targets[f"ratio_cpu_tracing_on_vs_off <= {TRACING_BOUND:g}"] = cpu <= TRACING_BOUND
        print(
            f"tracing on vs off: server CPU/request {cpu:5.3f}x, time/request {rps:5.3f}x "
            f"(target <= {TRACING_BOUND:g}x)"
        )
    if targets:
        out["targets_met"] = targets
    return out


def _node_version() -> str:
    run = subprocess.run([str(BUNDLED_NODE), "--version"], capture_output=True, text=True)
    return run.stdout.strip()


def _median_result(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("rps", "p50_ms", "p99_ms", "server_cpu_ms_per_req")
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in runs), 3) for k in keys}
    out["errors"] = sum(r["errors"] for r in runs)
    out["warmup_errors"] = sum(r["warmup_errors"] for r in runs)
    out["error_samples"] = [s for r in runs for s in r.get("error_samples", [])][:3]
    out["rps_per_round"] = [r["rps"] for r in runs]
    return out


if __name__ == "__main__":
    main()
