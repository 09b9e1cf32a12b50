"""Tools from an OpenAPI-style catalogue: ``python examples/catalogue_tools.py``.

``catalogue.json`` describes a lending library's HTTP API: three operations, each with an
``operationId``, parameters (path, query) and a JSON request body, sharing schemas through
``components``. :func:`operation_tools` turns each operation into a tool with
``Tool.from_schema``: the tool's input schema has one property per parameter plus ``body`` for
the request body (``components`` become ``$defs``), and one generic handler sends the HTTP
request. GET operations are marked read-only; the others need the policy's ``allow``.

The script serves the catalogue on a free loopback port (a small ``http.server`` app, in a
thread) and runs an agent on it. Its model is a ``FunctionModel`` (a deterministic function
of the conversation, so the output can be checked: ``tests/test_examples_catalogue.py`` runs
this command) that searches the catalogue and borrows the first book found. Two of its calls
have bad arguments (an ISBN that breaks the pattern, a loan longer than the maximum): the
dispatcher rejects them against the catalogue's schemas and no HTTP request is sent; the model
reads the error and corrects the loan. The server's request log, printed at the end, shows
what reached it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import anyio
import httpx

from agent_runtime import Agent
from agent_runtime.policy import ToolPolicy
from agent_runtime.testing import FunctionModel
from agent_runtime.tools import Tool
from agent_runtime.types import Message, ToolCall, ToolResult, ToolResultMessage, ToolSpec

CATALOGUE = Path(__file__).resolve().parent / "catalogue.json"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head")
BODY = "body"
"""The tool argument that carries an operation's JSON request body."""


# --------------------------------------------------------------------------- catalogue -> tools


def _local_refs(schema: Any) -> Any:
    """``#/components/schemas/X`` references rewritten to ``#/$defs/X`` (the tool's own)."""
    if isinstance(schema, dict):
        return {
            key: (
                value.replace("#/components/schemas/", "#/$defs/")
                if key == "$ref" and isinstance(value, str)
                else _local_refs(value)
            )
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_local_refs(item) for item in schema]
    return schema


def operation_schema(
    operation: Mapping[str, Any], components: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The tool input schema of one operation, and where each argument goes (``path``,
    ``query``, ``header`` or ``body``)."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    places: dict[str, str] = {}
    for parameter in operation.get("parameters", []):
        name = parameter["name"]
        argument = dict(parameter.get("schema", {}))
        if "description" in parameter:
            argument.setdefault("description", parameter["description"])
        properties[name] = argument
        places[name] = parameter["in"]
        if parameter.get("required") or parameter["in"] == "path":
            required.append(name)
    request_body = operation.get("requestBody")
    if request_body is not None:
        if BODY in properties:
            raise ValueError(f"{operation['operationId']}: a parameter is named {BODY!r}")
        properties[BODY] = dict(request_body["content"]["application/json"]["schema"])
        places[BODY] = BODY
        if request_body.get("required"):
            required.append(BODY)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    if components.get("schemas"):
        schema["$defs"] = dict(components["schemas"])
    return _local_refs(schema), places


def _sender(
    client: httpx.AsyncClient, method: str, path: str, places: Mapping[str, str]
) -> Callable[..., Any]:
    """The handler of one operation: its arguments, as an HTTP request to the catalogue's
    server; a JSON answer is the result, an HTTP error an error result the model can read."""

    async def send(**arguments: Any) -> Any:
        url = path
        query: dict[str, Any] = {}
        headers: dict[str, str] = {}
        body: Any = None
        for name, value in arguments.items():
            place = places[name]
            if place == "path":
                url = url.replace(f"{{{name}}}", quote(str(value), safe=""))
            elif place == "query":
                query[name] = value
            elif place == "header":
                headers[name] = str(value)
            else:
                body = value
        response = await client.request(
            method.upper(), url, params=query, headers=headers, json=body
        )
        if response.is_error:
            return ToolResult.error(f"HTTP {response.status_code}: {response.text}")
        return response.json()

    return send


def operation_tools(
    catalogue: Mapping[str, Any], client: httpx.AsyncClient
) -> list[Tool[..., Any]]:
    """One tool per operation of an OpenAPI-style ``catalogue``, named by its
    ``operationId``; ``client`` (with the server's ``base_url``) sends the requests."""
    components = catalogue.get("components", {})
    tools: list[Tool[..., Any]] = []
    for path, item in catalogue["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            schema, places = operation_schema(operation, components)
            tools.append(
                Tool.from_schema(
                    operation["operationId"],
                    schema,
                    _sender(client, method, path, places),
                    description=operation.get("summary") or operation.get("description", ""),
                    read_only=method in ("get", "head"),
                )
            )
    return tools


# --------------------------------------------------------------------------- the library's server

BOOKS = [
    {"isbn": "9780441478125", "title": "The Left Hand of Darkness", "author": "Ursula K. Le Guin"},
    {"isbn": "9780060512750", "title": "The Dispossessed", "author": "Ursula K. Le Guin"},
    {"isbn": "9780547928227", "title": "The Hobbit", "author": "J. R. R. Tolkien"},
]


class LibraryServer(ThreadingHTTPServer):
    """The catalogue's operations over HTTP on loopback; ``requests`` logs what reached it."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _LibraryHandler)
        self.requests: list[str] = []
        self.loans: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _LibraryHandler(BaseHTTPRequestHandler):
    server: LibraryServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Requests are logged in ``server.requests``, not on stderr."""

    def _answer(self, status: HTTPStatus, payload: Any) -> None:
        data = json.dumps(payload).encode()
        with self.server.lock:
            self.server.requests.append(f"{self.command} {self.path} -> {status.value}")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        if url.path == "/books":
            query = parse_qs(url.query)
            author = query.get("author", [""])[0].lower()
            limit = int(query.get("limit", ["5"])[0])
            found = [book for book in BOOKS if author in book["author"].lower()][:limit]
            self._answer(HTTPStatus.OK, {"books": found})
            return
        one = re.fullmatch(r"/books/([^/]+)", url.path)
        book = next((b for b in BOOKS if one and b["isbn"] == one.group(1)), None)
        if book is None:
            self._answer(HTTPStatus.NOT_FOUND, {"error": "no such book"})
            return
        self._answer(HTTPStatus.OK, book)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        if urlsplit(self.path).path != "/loans":
            self._answer(HTTPStatus.NOT_FOUND, {"error": "no such operation"})
            return
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        book = next((b for b in BOOKS if b["isbn"] == request.get("isbn")), None)
        if book is None:
            self._answer(HTTPStatus.NOT_FOUND, {"error": "no such book"})
            return
        days = int(request.get("days", 14))
        with self.server.lock:
            loan = {
                "loan_id": len(self.server.loans) + 1,
                "isbn": book["isbn"],
                "title": book["title"],
                "member_id": request["member_id"],
                "due": (date.today() + timedelta(days=days)).isoformat(),
            }
            self.server.loans.append(loan)
        self._answer(HTTPStatus.CREATED, loan)


# --------------------------------------------------------------------------- the agent

QUESTION = "Borrow a book by Le Guin for member 7, for six weeks if you can."


def librarian(messages: list[Message], tools: list[ToolSpec]) -> str | list[ToolCall]:
    """The model, scripted on what came back: search (and look up a malformed ISBN), borrow
    the first book found for 42 days (above the schema's maximum), fix that, then answer."""
    results = [m for m in messages if isinstance(m, ToolResultMessage)]
    if not results:
        return [
            ToolCall.of("searchBooks", {"author": "Le Guin", "limit": 2}),
            ToolCall.of("getBook", {"isbn": "0-441-47812-3"}),
        ]
    search = next(m.result for m in results if m.tool_name == "searchBooks")
    first = (search.structured_content or {})["books"][0]
    loan = {"isbn": first["isbn"], "member_id": 7}
    last = results[-1]
    if last.tool_name != "borrowBook":
        return [ToolCall.of("borrowBook", {BODY: {**loan, "days": 42}})]
    if last.result.is_error:
        return [ToolCall.of("borrowBook", {BODY: {**loan, "days": 28}})]
    made = last.result.structured_content or {}
    return f"Borrowed {made['title']!r} for member {made['member_id']}, due back {made['due']}."


async def run_agent(server_url: str) -> None:
    catalogue = json.loads(CATALOGUE.read_text(encoding="utf-8"))
    async with httpx.AsyncClient(base_url=server_url) as client:
        tools = operation_tools(catalogue, client)
        print("tools:", ", ".join(t.name for t in tools))
        agent = Agent(
            FunctionModel(librarian, name="librarian-script"),
            tools=tools,
            # As a host would: GETs are read-only and run; the POST runs because it is allowed.
            policy=ToolPolicy(allow=["borrowBook"], approve_unless_read_only=True),
        )
        result = await agent.run(QUESTION)
    for record in result.tool_calls:
        outcome = record.error_kind or "ok"
        text = " ".join(record.result.text_content.split())
        print(f"call {record.call.name} {record.call.arguments} -> {outcome}: {text}")
    print(f"answer: {result.output}")


def main() -> None:
    server = LibraryServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        print(f"catalogue served at {server.url}")
        anyio.run(run_agent, server.url)
    finally:
        server.shutdown()
        server.server_close()
    print(f"HTTP requests the server received ({len(server.requests)}):")
    for line in server.requests:
        print(f"  {line}")


if __name__ == "__main__":
    main()
