"""An MCP server written with the official SDK's ``MCPServer``, for the MCP client tests.

Run it as ``python tests/mcp_support/test_server.py [stdio | http PORT]``. Each tool exercises
one thing a client must handle: structured output, errors, progress, slowness (cancellation),
a crash mid-call, sampling, elicitation, roots, a tool list that changes at runtime, garbage on
stdout, log messages, and mixed content.

Environment knobs:

- ``MCP_TEST_FAIL_AT_START=message``: print ``message`` to stderr and exit 1 before serving.
- ``MCP_TEST_STATE_DIR=dir``: where the server records what it saw (one file per event), so a
  test can check that a call never reached it, or that a cancellation did.
- ``MCP_TEST_PAGE_SIZE=n``: serve ``tools/list`` in pages of ``n`` tools.
- ``MCP_TEST_EXTRA_TOOLS=n``: register ``n`` trivial extra tools (to make pagination visible).
- ``MCP_TEST_BANNER=1``: print a non-JSON banner line on stdout before serving.
- ``MCP_TEST_STUBBORN=1``: after stdin closes, ignore SIGTERM and keep running.
"""

from __future__ import annotations

import base64
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, ListRoots, Resolve, Sample
from mcp_types import (
    CreateMessageResult,
    EmbeddedResource,
    ImageContent,
    ListRootsResult,
    ListToolsResult,
    PaginatedRequestParams,
    ResourceLink,
    SamplingMessage,
    TextContent,
    TextResourceContents,
    ToolAnnotations,
)
from pydantic import BaseModel, Field

_STATE_DIR = os.environ.get("MCP_TEST_STATE_DIR")
_PAGE_SIZE = int(os.environ.get("MCP_TEST_PAGE_SIZE", "0"))
# One transparent pixel: a real PNG, so media type and bytes can be checked end to end.
_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def _record(event: str, detail: str = "") -> None:
    """Leave a trace of ``event`` for the test to read (append-only, one line per event)."""
    if _STATE_DIR is None:
        return
    with open(Path(_STATE_DIR) / "events.log", "a", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()} {event} {detail}\n")


class _PagedServer(MCPServer):
    """``MCPServer`` with optional cursor pagination of ``tools/list``."""

    async def _handle_list_tools(
        self, ctx: Any, params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        tools = await self.list_tools()
        if _PAGE_SIZE <= 0:
            return ListToolsResult(tools=tools)
        start = int(params.cursor) if params is not None and params.cursor else 0
        end = start + _PAGE_SIZE
        return ListToolsResult(
            tools=tools[start:end], next_cursor=str(end) if end < len(tools) else None
        )


server = _PagedServer("agent-runtime-test-server", version="1.0.0", log_level="WARNING")


class Weather(BaseModel):
    """A structured result (gives the tool an output schema)."""

    city: str
    temperature_c: float
    conditions: str


class Settings(BaseModel):
    """Nested constraints that an "is it an object" check does not see."""

    retries: int = Field(ge=0, le=5)
    mode: str = Field(pattern="^(fast|safe)$")


class Confirmation(BaseModel):
    """What the elicitation tool asks the user for."""

    confirm: bool
    reason: str = ""


@server.tool(annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True))
def echo(text: str) -> str:
    """Return the text unchanged."""
    _record("call", "echo")
    return text


@server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
def weather(city: str) -> Weather:
    """Structured weather for a city (structured content with an output schema)."""
    _record("call", "weather")
    return Weather(city=city, temperature_c=21.5, conditions="sunny")


@server.tool()
def bad_weather(city: str) -> Weather:
    """Claims an output schema, then returns structured content that breaks it."""
    _record("call", "bad_weather")
    return Weather.model_construct(city=city, temperature_c="warm", conditions="?")  # type: ignore[arg-type]


@server.tool(annotations=ToolAnnotations(destructive_hint=True))
def fail(message: str) -> str:
    """Always fails with ``message`` (the server reports isError)."""
    _record("call", "fail")
    raise ToolError(message)


@server.tool()
def configure(settings: Settings) -> str:
    """Takes a nested object with constraints; counts the calls that reach it."""
    _record("call", "configure")
    return f"configured {settings.retries} {settings.mode}"


@server.tool()
async def progress(steps: int, ctx: Context) -> str:
    """Report ``steps`` progress notifications, then finish."""
    _record("call", "progress")
    for i in range(1, steps + 1):
        await ctx.report_progress(i, steps, f"step {i}")
    return f"done {steps}"


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep ``seconds``; records a cancellation if the client gives up first."""
    _record("call", "slow")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        _record("cancelled", "slow")
        raise
    return f"slept {seconds}"


@server.tool()
def crash() -> str:
    """Kill the server process mid-call."""
    _record("call", "crash")
    os._exit(3)


@server.tool()
def crash_once() -> str:
    """Crash the first time it is called in a state dir; succeed afterwards."""
    _record("call", "crash_once")
    if _STATE_DIR is not None:
        marker = Path(_STATE_DIR) / "crashed_once"
        if not marker.exists():
            marker.write_text("1")
            os._exit(3)
    return "survived"


@server.tool()
def garbage(text: str) -> str:
    """Write a non-JSON line straight to stdout, then answer normally."""
    _record("call", "garbage")
    # The SDK's stdio server moves the wire off fd 1 to protect it from stray prints; a real
    # misbehaving server has no such guard, so write to the wire descriptor itself.
    from mcp.server import stdio as sdk_stdio

    claim = sdk_stdio._claims.get(1)
    fd = claim.private_fd if claim is not None and claim.private_fd is not None else 1
    os.write(fd, b"this is not JSON-RPC, just noise\n")
    return text


@server.tool()
async def log(message: str, ctx: Context) -> str:
    """Send ``message`` to the client as a warning-level log notification."""
    _record("call", "log")
    await ctx.warning(message, logger_name="test-server")
    return "logged"


@server.tool(structured_output=False)
def mixed() -> list[Any]:
    """Return every kind of content block: text, image, embedded resource, resource link."""
    _record("call", "mixed")
    return [
        TextContent(type="text", text="hello"),
        ImageContent(type="image", data=base64.b64encode(_PNG).decode(), mime_type="image/png"),
        EmbeddedResource(
            type="resource",
            resource=TextResourceContents(
                uri="test://doc", text="embedded text", mime_type="text/plain"
            ),
        ),
        ResourceLink(
            type="resource_link", uri="test://linked", name="linked", mime_type="text/plain"
        ),
    ]


def _ask_model(question: str) -> Sample:
    return Sample(
        [SamplingMessage(role="user", content=TextContent(type="text", text=question))],
        max_tokens=50,
        system_prompt="Answer briefly.",
    )


@server.tool()
def ask_model(question: str, answer: Annotated[CreateMessageResult, Resolve(_ask_model)]) -> str:
    """Ask the client's model ``question`` (sampling) and return its answer."""
    _record("call", "ask_model")
    content = answer.content
    text = content.text if isinstance(content, TextContent) else str(content)
    return f"model said: {text}"


def _ask_user(action: str) -> Elicit[Confirmation]:
    return Elicit(f"May I {action}?", Confirmation)


@server.tool()
def confirm_action(action: str, confirmation: Annotated[Confirmation, Resolve(_ask_user)]) -> str:
    """Ask the user to confirm ``action`` (elicitation)."""
    _record("call", "confirm_action")
    return f"confirmed={confirmation.confirm} reason={confirmation.reason}"


def _roots() -> ListRoots:
    return ListRoots()


@server.tool()
def list_client_roots(roots: Annotated[ListRootsResult, Resolve(_roots)]) -> str:
    """Return the client's roots, one URI per line."""
    _record("call", "list_client_roots")
    return "\n".join(str(root.uri) for root in roots.roots)


@server.tool()
async def add_tool(name: str, ctx: Context) -> str:
    """Register a new tool ``name`` and announce that the tool list changed."""
    _record("call", "add_tool")

    def added() -> str:
        return f"I am {name}"

    server.add_tool(added, name=name, description=f"Added at runtime as {name}")
    # Both eras: the handshake-era notification and the 2026 subscription bus.
    try:
        await ctx.request_context.session.send_tool_list_changed()
    except Exception:  # noqa: BLE001 - no back-channel on a stateless request
        pass
    await ctx.notify_tools_changed()
    return f"added {name}"


@server.tool()
def header(name: str, ctx: Context) -> str:
    """The value of HTTP request header ``name`` ("" when absent or not over HTTP)."""
    headers = ctx.headers or {}
    return str(headers.get(name.lower(), headers.get(name, "")))


@server.tool()
def calls(tool: str) -> int:
    """How many calls to ``tool`` reached this server (read from the state dir)."""
    if _STATE_DIR is None:
        return -1
    path = Path(_STATE_DIR) / "events.log"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.split()[1:] == ["call", tool])


@server.resource("test://greeting", mime_type="text/plain")
def greeting() -> str:
    """A static text resource."""
    return "hello from the test server"


@server.resource("test://items/{item_id}")
def item(item_id: str) -> str:
    """A templated resource."""
    return f"item {item_id}"


@server.prompt()
def review(code: str) -> str:
    """A prompt with one argument."""
    return f"Please review this code:\n{code}"


for _i in range(int(os.environ.get("MCP_TEST_EXTRA_TOOLS", "0"))):

    def _extra(i: int = _i) -> str:
        return f"extra {i}"

    server.add_tool(_extra, name=f"extra_{_i:03d}", description=f"Extra tool {_i}")


def main(argv: list[str]) -> None:
    failure = os.environ.get("MCP_TEST_FAIL_AT_START")
    if failure:
        print(failure, file=sys.stderr, flush=True)
        sys.exit(1)
    if os.environ.get("MCP_TEST_BANNER"):
        # Some servers print a banner on stdout before speaking JSON-RPC.
        print("Starting the test server... (not JSON)", flush=True)
    _record("start", str(time.time()))
    transport = argv[1] if len(argv) > 1 else "stdio"
    if transport == "stdio":
        server.run()
        if os.environ.get("MCP_TEST_STUBBORN"):
            # Ignore both the closed stdin and SIGTERM: only SIGKILL ends this process.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            _record("stubborn", "")
            time.sleep(120)
    elif transport == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(argv[2]))
    else:
        raise SystemExit(f"unknown transport {transport!r}")


if __name__ == "__main__":
    main(sys.argv)
