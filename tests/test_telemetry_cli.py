"""``--trace console|otlp`` on the CLI: a real ``agent-runtime run`` process prints its spans on
stderr, or posts them as OTLP/HTTP protobuf to a collector (here a loopback HTTP server the test
runs), flushed before the process exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from agent_runtime.cli import build_parser

TOOLS_MODULE = '''
from agent_runtime import tool

@tool(read_only=True)
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()
'''


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    (tmp_path / "trace_cli_tools.py").write_text(TOOLS_MODULE)
    config = {
        "name": "traced",
        "model": {"backend": "schema"},
        "tools": ["trace_cli_tools:shout"],
    }
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(config))
    return path


def _run_cli(
    config: Path, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean["PYTHONPATH"] = os.pathsep.join([str(config.parent), clean.get("PYTHONPATH", "")])
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "agent_runtime.cli", "run", *options, "--config", str(config), "go"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=config.parent,
        env=clean,
        stdin=subprocess.DEVNULL,
    )


def test_trace_console_prints_spans_on_stderr(config_path: Path) -> None:
    done = _run_cli(config_path, "--trace", "console")
    assert done.returncode == 0, done.stderr
    for name in ("invoke_agent traced", "chat schema", "execute_tool shout"):
        assert f'"name": "{name}"' in done.stderr, name
    assert '"gen_ai.tool.call.arguments"' not in done.stderr  # content only when asked
    assert '"name": "' not in done.stdout  # stdout is the command's answer only
    assert "gen_ai.client.token.usage" in done.stderr  # metrics flushed at exit


def test_trace_content_records_tool_arguments(config_path: Path) -> None:
    done = _run_cli(config_path, "--trace", "console", "--trace-content")
    assert done.returncode == 0, done.stderr
    assert '"gen_ai.tool.call.arguments"' in done.stderr
    assert '"gen_ai.tool.call.result"' in done.stderr


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    received: list[tuple[str, str, bytes]] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("via", ["option", "environment"])
def test_trace_otlp_posts_protobuf_spans(
    config_path: Path, collector: tuple[str, list[tuple[str, str, bytes]]], via: str
) -> None:
    url, received = collector
    if via == "option":
        done = _run_cli(config_path, "--trace", "otlp", "--trace-endpoint", url)
    else:
        done = _run_cli(
            config_path,
            "--trace",
            "otlp",
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": url,
                "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer collector-key-123",
            },
        )
    assert done.returncode == 0, done.stderr
    traces = [body for path, _, body in received if path == "/v1/traces"]
    assert traces, [path for path, _, _ in received]
    assert all(ctype == "application/x-protobuf" for path, ctype, _ in received)
    names: set[str] = set()
    trace_ids: set[bytes] = set()
    for body in traces:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert service["service.name"] == "agent-runtime"
            for scope_spans in resource_spans.scope_spans:
                assert scope_spans.scope.name == "agent_runtime"
                for s in scope_spans.spans:
                    names.add(s.name)
                    trace_ids.add(s.trace_id)
    assert {"invoke_agent traced", "chat schema", "execute_tool shout"} <= names
    assert len(trace_ids) == 1
    assert any(path == "/v1/metrics" for path, _, _ in received)
    assert all(b"collector-key-123" not in body for _, _, body in received)


def test_trace_options_are_on_every_command_that_runs_an_agent_or_model() -> None:
    parser = build_parser()
    for argv in (
        ["run", "hi"],
        ["serve", "--a2a"],
        ["chat"],
        ["mcp-serve"],
        ["serve-model"],
    ):
        args = parser.parse_args([*argv[:1], "--trace", "otlp", "--trace-content", *argv[1:]])
        assert args.trace == "otlp" and args.trace_content, argv
    with pytest.raises(SystemExit):
        parser.parse_args(["tools", "--trace", "console"])
