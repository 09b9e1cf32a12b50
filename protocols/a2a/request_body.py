"""The request body at the node's HTTP boundary: read, parsed and checked before anything uses it.

Both HTTP bindings take their body through here, in this order:

1. :func:`read_body`: the content type (JSON, ``application/a2a+json`` or another ``+json``:
   415 otherwise), the size (``Content-Length`` or the bytes received past ``max_bytes``: 413)
   and the time it takes to arrive (``timeout_s``: 408; a ``Content-Length`` larger than the
   body would otherwise hold the connection open);
2. :func:`parse_json_body`: unparseable is a JSON parse error; nesting too deep for the parser
   is invalid params;
3. :func:`check_json_input`: nesting deeper than :data:`MAX_JSON_DEPTH` and lone UTF-16
   surrogates (``"\\ud800"``) anywhere in keys or values are invalid params. The same check
   covers REST path segments and query values.

So nothing later meets input that it could store but not read back (pydantic's recursion
limit) or text that no UTF-8 encoder (SQLite, the JSON writer, a peer) can take.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from starlette.requests import Request

from .errors import (
    InvalidParamsError,
    JSONParseError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
)
from .types import A2A_CONTENT_TYPE

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 10.0
"""Seconds a request body may take to arrive in full (a Content-Length larger than the body)."""
# The deepest nesting of JSON objects/arrays a request body may have, counted from the body's
# root (the JSON-RPC envelope or the REST body is level 1). Deeper documents are refused with
# invalid params before pydantic sees them: stored, they could not be read back (pydantic's
# recursion limit) and would poison the principal's reads and the node's restart.
MAX_JSON_DEPTH = 64

_JSON = "application/json"
_SURROGATE = re.compile("[\ud800-\udfff]")


async def read_body(request: Request, *, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body of ``request``, once its content type, size and arrival time pass."""
    ctype = request.headers.get("content-type")
    if ctype is not None:
        media = ctype.split(";", 1)[0].strip().lower()
        if media not in (_JSON, A2A_CONTENT_TYPE) and not media.endswith("+json"):
            raise UnsupportedMediaTypeError(
                f"Content type {media!r} is not supported; send {_JSON} or {A2A_CONTENT_TYPE}"
            )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLargeError(
            f"Request body of {length} bytes exceeds the limit of {max_bytes}"
        )
    chunks = []
    size = 0
    try:
        # asyncio's own timeout: a third of anyio's cost, on every request.
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLargeError(
                        f"Request body exceeds the limit of {max_bytes} bytes"
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeoutError(
            f"The request body did not arrive within {timeout_s:g} s ({size} bytes received)"
        ) from None
    return b"".join(chunks)


def parse_json_body(raw: bytes) -> Any:
    """``json.loads`` with a nesting cap: too deep is invalid params, unparseable a parse error."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise _too_deep_error() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise JSONParseError(f"Invalid JSON payload: {exc}") from None
    return value


def check_json_input(value: Any, limit: int = MAX_JSON_DEPTH, *, prefix: str = "") -> None:
    """The request-boundary check on decoded JSON (or path/query values): raise invalid params
    if ``value`` nests objects/arrays deeper than ``limit`` levels, or if any string in it (key
    or value) holds a lone surrogate.

    Iterative, so arbitrarily deep input cannot exhaust the stack; ``prefix`` names the root in
    the error (``query``, ``path``).
    """
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(value, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                raise _lone_surrogate_error(_dotted(prefix, path))
            continue
        if isinstance(node, dict):
            if depth > limit:
                raise _too_deep_error()
            for key, child in node.items():
                if _SURROGATE.search(key):
                    raise _lone_surrogate_error(_dotted(prefix, path) or "key")
                if isinstance(child, dict | list | str):
                    stack.append((child, depth + 1, (*path, key)))
        elif isinstance(node, list):
            if depth > limit:
                raise _too_deep_error()
            for index, child in enumerate(node):
                if isinstance(child, dict | list | str):
                    stack.append((child, depth + 1, (*path, index)))


def _dotted(prefix: str, path: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in (prefix, *path) if p != "")


def _too_deep_error() -> InvalidParamsError:
    return InvalidParamsError.from_violations(
        [("", f"JSON nesting exceeds the limit of {MAX_JSON_DEPTH} levels")],
        message=f"Invalid parameters: JSON nesting exceeds the limit of {MAX_JSON_DEPTH} levels",
    )


def _lone_surrogate_error(where: str) -> InvalidParamsError:
    text = "a lone UTF-16 surrogate escape (e.g. \\ud800) is not valid Unicode text"
    return InvalidParamsError.from_violations(
        [(where, text)], message=f"Invalid parameters: {where or 'request'}: {text}"
    )


__all__ = [
    "DEFAULT_BODY_TIMEOUT_S",
    "DEFAULT_MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "check_json_input",
    "parse_json_body",
    "read_body",
]
