"""Front calls that wait across a 2026-07-28 host's input rounds.

In protocol 2026-07-28 a server asks its host for input only by answering the host's own
request with an ``InputRequiredResult`` (the questions plus opaque state); the host answers and
sends the same request again with the answers and the state. A server behind the gateway asks
differently: in the middle of a call, over its own session. ``InputRounds`` joins the two: the
gateway's work for a host's ``tools/call`` runs as a ``WaitingCall`` in a task of its own; when
a server behind asks (elicitation or sampling), the inner request waits while the host's call is
answered with an ``InputRequiredResult`` whose state is a fresh token; the host's retry with
that token hands the answers to the waiting inner request, and the call goes on to its result or
to the next question.

A token is single-use (each round gets a new one), bound to the host that got it (its
authenticated principal, session and client info) and to the call (tool name and arguments),
and valid while its question waits: a question not answered within ``wait_s`` seconds expires
(the server behind gets a cancelled elicitation or a failed sampling) and so does its token.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import mcp_types as mt
from mcp.server import ServerRequestContext
from mcp.server.request_state import authenticated_principal
from mcp.shared.exceptions import MCPError

__all__ = ["DEFAULT_INPUT_WAIT_S", "InputRounds", "WaitingCall", "host_key"]

DEFAULT_INPUT_WAIT_S = 300.0
"""How long a question from a server behind waits for a 2026-07-28 host's answer."""
_SPENT_MEMORY = 1024
_TOKEN_BYTES = 24

Ctx = ServerRequestContext[Any, Any]
Progress = Callable[[float, float | None, str | None], Awaitable[None]]


def host_key(ctx: Ctx) -> str:
    """Who sent a front request, as far as the transport tells: its authenticated principal,
    its session (none on stateless HTTP) and the client info it declared."""
    connection = getattr(ctx.session, "_connection", None)
    session_id = getattr(connection, "session_id", None)
    client = ctx.session.client_params
    info = client.client_info.model_dump(mode="json") if client is not None else None
    return json.dumps([authenticated_principal(ctx), session_id, info], sort_keys=True)


def _call_identity(params: mt.CallToolRequestParams) -> tuple[str, str]:
    """The call a token is bound to: the tool's name and a digest of its arguments."""
    canonical = json.dumps(params.arguments or {}, sort_keys=True, separators=(",", ":"))
    return params.name, hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(eq=False)
class _Question:
    key: str
    request: mt.InputRequest
    answered: anyio.Event = field(default_factory=anyio.Event)
    answer: mt.InputResponse | None = None
    sent: bool = False


class WaitingCall:
    """One front call whose work goes on while its host answers questions."""

    def __init__(self, rounds: InputRounds, ctx: Ctx, identity: tuple[str, str]) -> None:
        self._rounds = rounds
        self.host = host_key(ctx)
        self.identity = identity
        self.capabilities = ctx.session.client_capabilities
        """What the host said it can answer (elicitation, sampling) on its first request."""
        self.ctx: Ctx | None = None
        """The host request of the round in progress (``None`` between rounds)."""
        self.token: str | None = None
        self.scope = anyio.CancelScope()
        self._questions: list[_Question] = []
        self._result: mt.CallToolResult | None = None
        self._changed = anyio.Event()
        self._keys = itertools.count(1)

    # ------------------------------------------------------------------ the inner side

    async def ask(self, request: mt.InputRequest) -> mt.InputResponse | None:
        """Put ``request`` to the host and wait for its answer; ``None`` when it did not
        answer within the time limit (the question and its token expire)."""
        question = _Question(key=f"gateway-input-{next(self._keys)}", request=request)
        self._questions.append(question)
        self._changed.set()
        with anyio.move_on_after(self._rounds.wait_s):
            await question.answered.wait()
        self._questions.remove(question)
        if not question.answered.is_set():
            self._rounds.retire(self, "expired")
        return question.answer

    async def report_progress(
        self, progress: float, total: float | None, message: str | None
    ) -> None:
        """Progress of the work, sent with the host request of the round in progress."""
        ctx = self.ctx
        if ctx is None:
            return  # between rounds no host request is open to carry it
        try:
            await ctx.session.report_progress(progress, total, message)
        except Exception:  # noqa: BLE001 - the round ended meanwhile: progress is best effort
            pass

    def finish(self, result: mt.CallToolResult) -> None:
        self._result = result
        self._changed.set()

    # ------------------------------------------------------------------ the front side

    async def next_outcome(self) -> mt.CallToolResult | list[_Question]:
        """The work's result, or the questions not yet put to the host."""
        while True:
            fresh = [q for q in self._questions if not q.sent]
            if fresh:
                for question in fresh:
                    question.sent = True
                return fresh
            if self._result is not None:
                return self._result
            self._changed = anyio.Event()
            await self._changed.wait()

    def answer(self, responses: mt.InputResponses) -> None:
        """Hand the host's answers to the questions it was asked (one left out: no answer)."""
        for question in [q for q in self._questions if q.sent and not q.answered.is_set()]:
            question.answer = responses.get(question.key)
            question.answered.set()


class InputRounds:
    """The registry of waiting calls, keyed by the token of their open round."""

    def __init__(self, wait_s: float = DEFAULT_INPUT_WAIT_S) -> None:
        if not (math.isfinite(wait_s) and wait_s > 0):
            raise ValueError(f"the input wait must be a positive number of seconds, got {wait_s!r}")
        self.wait_s = wait_s
        self._waiting: dict[str, WaitingCall] = {}
        self._spent: OrderedDict[str, str] = OrderedDict()
        self._tg: anyio.abc.TaskGroup | None = None

    async def serve(self) -> None:
        """Hold the task group the waiting calls run in, until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                await anyio.sleep_forever()
            finally:
                self._tg = None
                tg.cancel_scope.cancel()

    async def call(
        self,
        ctx: Ctx,
        params: mt.CallToolRequestParams,
        work: Callable[[WaitingCall], Awaitable[mt.CallToolResult]],
    ) -> mt.CallToolResult | mt.InputRequiredResult:
        """One round of a host's ``tools/call``: a new call starts ``work``, a retry carrying
        a token resumes the call waiting on it; the answer is the result or the next questions."""
        if params.request_state is not None:
            waiting = self._resume(ctx, params)
        else:
            if params.input_responses:
                raise MCPError(
                    code=mt.INVALID_PARAMS,
                    message="inputResponses without the requestState they answer",
                )
            if self._tg is None:
                raise MCPError(code=mt.INTERNAL_ERROR, message="the gateway is shutting down")
            waiting = WaitingCall(self, ctx, _call_identity(params))
            self._tg.start_soon(self._run, waiting, work)
        return await self._round(ctx, waiting)

    async def _run(
        self, waiting: WaitingCall, work: Callable[[WaitingCall], Awaitable[mt.CallToolResult]]
    ) -> None:
        result: mt.CallToolResult | None = None
        with waiting.scope:
            try:
                result = await work(waiting)
            except Exception as exc:  # noqa: BLE001 - one call's failure must not end the others
                result = _error(f"the call failed: {exc}")
        waiting.finish(result or _error("the call was cancelled"))

    async def _round(
        self, ctx: Ctx, waiting: WaitingCall
    ) -> mt.CallToolResult | mt.InputRequiredResult:
        waiting.ctx = ctx
        try:
            outcome = await waiting.next_outcome()
        except anyio.get_cancelled_exc_class():
            waiting.scope.cancel()  # the host gave up on its call: so does the work
            raise
        finally:
            waiting.ctx = None
        if isinstance(outcome, mt.CallToolResult):
            return outcome
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        waiting.token = token
        self._waiting[token] = waiting
        return mt.InputRequiredResult(
            input_requests={q.key: q.request for q in outcome}, request_state=token
        )

    def _resume(self, ctx: Ctx, params: mt.CallToolRequestParams) -> WaitingCall:
        token = params.request_state or ""
        waiting = self._waiting.get(token)
        if waiting is None:
            why = self._spent.get(token)
            reason = {
                "used": "was already used (each round's requestState is good for one retry)",
                "expired": f"has expired (questions wait {self.wait_s:g} s for their answers)",
            }.get(why or "", "was not issued by this gateway")
            raise MCPError(code=mt.INVALID_PARAMS, message=f"this requestState {reason}")
        if waiting.host != host_key(ctx) or waiting.identity != _call_identity(params):
            # Not consumed: the host it was issued to may still use it.
            raise MCPError(
                code=mt.INVALID_PARAMS,
                message="this requestState was issued for another host or another call",
            )
        self.retire(waiting, "used")
        waiting.answer(params.input_responses or {})
        return waiting

    def retire(self, waiting: WaitingCall, why: str) -> None:
        """Forget the token of ``waiting``'s open round (``why``: used or expired)."""
        token = waiting.token
        if token is None:
            return
        waiting.token = None
        self._waiting.pop(token, None)
        self._spent[token] = why
        while len(self._spent) > _SPENT_MEMORY:
            self._spent.popitem(last=False)


def _error(text: str) -> mt.CallToolResult:
    return mt.CallToolResult(content=[mt.TextContent(type="text", text=text)], is_error=True)
