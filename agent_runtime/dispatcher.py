"""The dispatcher: from an assistant turn's tool calls to tool results, safely.

For each call: parse the raw argument text, resolve the name, check the arguments against the
tool's full JSON Schema (once: :meth:`agent_runtime.schema.CompiledSchema.check`), apply the
policy, run it (concurrently with the other calls, under a timeout and a global concurrency
limit), cap the result's size, and return results in call order. Everything the model can get
wrong becomes an ``is_error`` result that says precisely what to fix; only a spent retry budget
stops the run (``ToolRetriesExhausted``), or a tool that raises a ``RunOutcome`` (input or
authorisation needed, a refusal: :mod:`agent_runtime.outcome`).

Each call is counted in the tool metrics and, with tracing on, runs inside an ``execute_tool``
span (its error kind as ``error.type``; arguments and results only with content capture on).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import anyio

from .combinators import CombinedToolset
from .errors import SchemaError, ToolRetriesExhausted
from .events import RunEvent, ToolCallFinished, ToolCallProgress, ToolCallStarted
from .outcome import RunOutcome, find_outcome
from .output_limit import cap_result
from .policy import Decision, ToolPolicy
from .schema.check import CompiledSchema, compile_schema, format_violations
from .schema.wording import a_json_type
from .telemetry.content import capture
from .telemetry.metrics import record_tool_call
from .telemetry.spans import span, tracer
from .tool_names import normalize_tool_name, unknown_tool_message
from .toolset import ProgressCallback, ToolContext, Toolset
from .types import ErrorKind, ToolCall, ToolCallRecord, ToolResult, ToolSpec

logger = logging.getLogger("agent_runtime.dispatcher")

EventSink = Callable[[RunEvent], Awaitable[None]]


@dataclass
class DispatchConfig:
    """Knobs of the dispatcher. ``None`` disables a limit."""

    call_timeout_s: float | None = 60.0
    max_concurrency: int = 64
    max_result_chars: int | None = 50_000
    max_retries: int = 3
    """Invalid calls allowed per tool in a row (bad JSON, unknown name, schema violation)
    before the run stops. A valid call resets the tool's count."""
    policy: ToolPolicy = field(default_factory=ToolPolicy)


@dataclass
class _Entry:
    exposed: str
    toolset: Toolset
    """The member toolset that runs it."""
    spec: ToolSpec
    """The spec as its toolset lists it (the name used to call it)."""
    offered: ToolSpec
    """The spec the model sees: exposed name, normalised schema."""
    schema: CompiledSchema


class _Slots:
    """A counting limit on calls in flight, handed over first come, first served.

    Cheaper than ``anyio.CapacityLimiter`` on the path every call takes (a free slot is an
    integer decrement: no task lookup, no checkpoint), which matters when a tool answers in
    about a millisecond.
    """

    def __init__(self, total: int) -> None:
        self._free = total
        self._waiters: deque[anyio.Event] = deque()

    def take_nowait(self) -> bool:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        """Wait for a slot; a slot handed to a waiter cancelled meanwhile is passed on."""
        if self.take_nowait():
            return
        handed = anyio.Event()
        self._waiters.append(handed)
        try:
            await handed.wait()
        except BaseException:
            if handed.is_set():
                self.give()
            else:
                self._waiters.remove(handed)
            raise

    def give(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # the slot goes straight to the longest waiter
        else:
            self._free += 1


class _Invalid(Exception):
    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


class Dispatcher:
    """Validates and runs tool calls against a set of toolsets."""

    def __init__(self, toolsets: Sequence[Toolset], config: DispatchConfig | None = None) -> None:
        self.config = config or DispatchConfig()
        self._toolset = CombinedToolset(list(toolsets))
        self._toolset.add_tools_changed_listener(self._invalidate)
        self._entries: dict[str, _Entry] | None = None
        self._offered: list[ToolSpec] = []
        self._slots = _Slots(max(1, self.config.max_concurrency))
        self._invalid_counts: dict[str, int] = {}
        self.warnings: list[str] = []
        """Schema and name normalisations applied to the tools on offer."""

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self._toolset.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._toolset.__aexit__(exc_type, exc, tb)

    # ------------------------------------------------------------------ tool catalogue

    def _invalidate(self) -> None:
        self._entries = None

    async def tool_specs(self) -> list[ToolSpec]:
        """The tools on offer, as the model should see them (cached until a list changes)."""
        await self._ensure_entries()
        return list(self._offered)

    async def _ensure_entries(self) -> dict[str, _Entry]:
        if self._entries is not None:
            return self._entries
        entries: dict[str, _Entry] = {}
        offered: list[ToolSpec] = []
        for member, spec in (await self._toolset.members_by_tool()).values():
            exposed = normalize_tool_name(spec.name)
            if exposed in entries:
                # Two names that normalise alike: keep the original spelling for the second.
                exposed = spec.name
            try:
                compiled = compile_schema(spec.input_schema)
            except SchemaError as err:
                self._warn(f"tool '{spec.name}' ({spec.origin}) left out: {err}")
                continue
            except Exception as exc:  # noqa: BLE001 - one odd schema must not stop every call
                logger.debug("compiling the schema of %s raised", spec.name, exc_info=True)
                self._warn(
                    f"tool '{spec.name}' ({spec.origin}) left out: its schema could not be "
                    f"compiled ({_describe(exc)})"
                )
                continue
            if exposed != spec.name or compiled.warnings:
                self._warn(_normalised_summary(spec, exposed, compiled.warnings))
            shown = spec.model_copy(update={"name": exposed, "input_schema": compiled.schema})
            entries[exposed] = _Entry(exposed, member, spec, shown, compiled)
            offered.append(shown)
        self._entries = entries
        self._offered = offered
        return entries

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            logger.warning(message)

    # ------------------------------------------------------------------ dispatch

    async def dispatch(
        self, calls: Sequence[ToolCall], emit: EventSink | None = None
    ) -> list[ToolCallRecord]:
        """Run one turn's calls; results come back in call order.

        Raises ``ToolRetriesExhausted`` when a tool's budget of invalid calls is spent (after
        all of this turn's calls have their results).
        """
        entries = self._entries
        if entries is None:
            entries = await self._ensure_entries()
        one = self._one if tracer() is None else self._one_traced
        if len(calls) == 1:  # the common turn: no task group, nothing to order
            done = [await one(calls[0], entries, emit)]
        else:
            records: list[ToolCallRecord | None] = [None] * len(calls)

            async def run(index: int, call: ToolCall) -> None:
                records[index] = await one(call, entries, emit)

            try:
                async with anyio.create_task_group() as group:
                    for index, call in enumerate(calls):
                        group.start_soon(run, index, call)
            except BaseExceptionGroup as failed:  # a tool ended the run: raise its outcome as is
                outcome = find_outcome(failed)
                if outcome is None:
                    raise
                raise outcome from None
            done = [record for record in records if record is not None]
        if self._invalid_counts:  # only a tool with invalid calls on record can spend a budget
            self._check_budget(done)
        return done

    def _check_budget(self, records: Sequence[ToolCallRecord]) -> None:
        limit = self.config.max_retries
        for record in records:
            if record.error_kind not in ("parse", "unknown_tool", "validation"):
                continue
            count = self._invalid_counts.get(record.call.name, 0)
            if count > limit:
                raise ToolRetriesExhausted(
                    f"The model made {count} invalid calls in a row to tool "
                    f"'{record.call.name}' (retry budget {limit}); last error: "
                    f"{record.result.text_content}"
                )

    async def _one_traced(
        self, call: ToolCall, entries: dict[str, _Entry], emit: EventSink | None
    ) -> ToolCallRecord:
        """:meth:`_one` inside an ``execute_tool`` span (tracing on): the tool runs in it, so the
        spans of an MCP or A2A toolset's requests are its children."""
        entry = entries.get(call.name)
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": call.name,
            "gen_ai.tool.call.id": call.id,
            "agent_runtime.tool.origin": entry.spec.origin if entry is not None else None,
        }
        with span(f"execute_tool {call.name}", attributes=attributes) as scope:
            record = await self._one(call, entries, emit)
            if scope.recording:
                arguments = capture(
                    call.arguments if record.arguments is None else record.arguments
                )
                if arguments is not None:
                    scope.set("gen_ai.tool.call.arguments", arguments)
                    scope.set("gen_ai.tool.call.result", capture(record.result.text_content))
                if record.error_kind is not None:
                    # The message only when content capture is on: it can quote the arguments.
                    detail = capture(record.result.text_content) if arguments is not None else None
                    scope.fail(record.error_kind, detail or "")
        return record

    async def _one(
        self, call: ToolCall, entries: dict[str, _Entry], emit: EventSink | None
    ) -> ToolCallRecord:
        """One call from start to record. The run is inline (no helper coroutine): every
        frame in the await chain is re-entered each time the call resumes."""
        started = time.perf_counter()
        if emit is not None:
            await emit(ToolCallStarted(call=call))
        arguments: dict[str, Any] | None = None
        dropped: tuple[str, ...] = ()
        try:
            arguments = _parse_arguments(call)
            entry = entries.get(call.name)
            if entry is None:
                raise _Invalid("unknown_tool", unknown_tool_message(call.name, list(entries)))
            checked = entry.schema.check(arguments)  # never raises: a failed check is invalid
            if checked.violations:
                raise _Invalid("validation", format_violations(entry.exposed, checked.violations))
            arguments, dropped = checked.arguments, checked.dropped
            if dropped:
                logger.debug("tool %s: null dropped for %s", entry.exposed, ", ".join(dropped))
            if self._invalid_counts:
                self._invalid_counts.pop(call.name, None)
            policy = self.config.policy
            if policy.decision_for(entry.offered) is not Decision.ALLOW:
                verdict = await policy.check(call, entry.offered, arguments)
                if not verdict.allowed:
                    raise _Invalid("denied", verdict.reason)
        except _Invalid as invalid:
            if invalid.kind in ("parse", "unknown_tool", "validation"):
                self._invalid_counts[call.name] = self._invalid_counts.get(call.name, 0) + 1
            return await self._finish(
                call,
                ToolResult.error(str(invalid)),
                arguments,
                invalid.kind,
                started,
                emit,
                entries.get(call.name),
                dropped,
            )

        timeout = self.config.call_timeout_s
        ctx = ToolContext(call_id=call.id, tool_name=entry.spec.name, timeout_s=timeout)
        if emit is not None:
            ctx.report_progress = _progress_reporter(call.id, emit)
        toolset = entry.toolset
        slots = self._slots
        timed_out = False
        raw: object = None
        try:
            if not slots.take_nowait():
                await slots.take()
            try:
                if timeout is None or toolset.enforces_timeout:
                    raw = await toolset.call_tool(entry.spec.name, arguments, ctx)
                else:
                    with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
                        raw = await toolset.call_tool(entry.spec.name, arguments, ctx)
                    timed_out = scope.cancelled_caught
            finally:
                slots.give()
        except RunOutcome:
            raise  # not a failure: the tool ends the run (input, authorisation, refusal)
        except Exception as exc:  # noqa: BLE001 - every tool failure goes back to the model
            logger.debug("tool %s raised", entry.exposed, exc_info=True)
            result: ToolResult = ToolResult.error(
                f"Tool '{entry.exposed}' failed: {_describe(exc)}"
            )
            kind: ErrorKind | None = "tool_error"
        else:
            result, kind = self._settle(entry, raw, timed_out)
        return await self._finish(call, result, arguments, kind, started, emit, entry, dropped)

    @staticmethod
    async def _finish(
        call: ToolCall,
        result: ToolResult,
        arguments: dict[str, Any] | None,
        kind: ErrorKind | None,
        started: float,
        emit: EventSink | None,
        entry: _Entry | None,
        dropped: tuple[str, ...] = (),
    ) -> ToolCallRecord:
        duration = time.perf_counter() - started
        record = ToolCallRecord.of(call, result, arguments, kind, duration, dropped)
        if entry is None:  # a name the model made up: one metric series for all of them
            record_tool_call(tool="", origin="", duration_s=duration, error_type=kind)
        else:
            record_tool_call(
                tool=entry.exposed, origin=entry.spec.origin, duration_s=duration, error_type=kind
            )
        if emit is not None:
            await emit(ToolCallFinished(record=record))
        return record

    def _settle(
        self, entry: _Entry, raw: object, timed_out: bool
    ) -> tuple[ToolResult, ErrorKind | None]:
        """What a tool that returned (or ran out of time) gives the model, size-capped."""
        if timed_out:
            return (
                ToolResult.error(
                    f"Tool '{entry.exposed}' timed out after {self.config.call_timeout_s:g}s "
                    "and was cancelled."
                ),
                "timeout",
            )
        result = _coerce_result(raw)
        if result is None:
            return (
                ToolResult.error(
                    f"Tool '{entry.exposed}' returned {type(raw).__name__}, not a ToolResult."
                ),
                "result_invalid",
            )
        if self.config.max_result_chars is not None:
            result = cap_result(result, self.config.max_result_chars)
        return result, ("tool_error" if result.is_error else None)


_SUMMARY_CHANGES = 5
"""Schema rewrites a warning line spells out; the rest are counted (all are logged at DEBUG)."""


def _normalised_summary(spec: ToolSpec, exposed: str, changes: Sequence[str]) -> str:
    """One line for everything normalised in one tool: its name and its schema's rewrites.

    A catalogue tool can need dozens of rewrites; one line per rewrite buries the rest of the
    log, so the line lists the first few and counts the others.
    """
    parts = []
    if exposed != spec.name:
        parts.append(f"offered as '{exposed}'")
    if changes:
        for change in changes:
            logger.debug("tool '%s' (%s) schema: %s", spec.name, spec.origin, change)
        noun = "change" if len(changes) == 1 else "changes"
        listed = "; ".join(changes[:_SUMMARY_CHANGES])
        more = len(changes) - _SUMMARY_CHANGES
        if more > 0:
            listed += f"; … and {more} more"
        parts.append(f"schema normalised ({len(changes)} {noun}): {listed}")
    return f"tool '{spec.name}' ({spec.origin}) " + "; ".join(parts)


def _progress_reporter(call_id: str, emit: EventSink) -> ProgressCallback:
    async def progress(done: float, total: float | None, message: str | None) -> None:
        await emit(ToolCallProgress(call_id=call_id, progress=done, total=total, message=message))

    return progress


class _NotFinite(ValueError):
    """A number JSON cannot carry: ``NaN``, ``Infinity``, or a float literal beyond the
    double range (``1e400``). Python's parser accepts them; schema checks then raise on them
    and tools receive values no JSON peer can be sent back."""

    def __init__(self, literal: str) -> None:
        super().__init__(literal)
        self.literal = literal


def _refuse_constant(literal: str) -> Any:
    raise _NotFinite(literal)


_INFINITY = float("inf")


def _finite_float(literal: str) -> float:
    """``float(literal)``, refusing what overflows to infinity. The scanner calls this only for
    numbers written with a fraction or an exponent: about 0.2 us each, integers cost nothing."""
    value = float(literal)
    if value == _INFINITY or value == -_INFINITY:
        raise _NotFinite(literal)
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_scan_json: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
"""The C scanner under ``json.loads``, for the common case: a bare object, no padding."""


def _parse_arguments(call: ToolCall) -> dict[str, Any]:
    text = call.arguments
    if text[:1] == "{":
        try:
            value, end = _scan_json(text, 0)
        except (StopIteration, ValueError, RecursionError):
            pass  # reported below, with the decoder's message and position
        else:
            if end == len(text):
                return value  # type: ignore[no-any-return]
    if not text.strip():
        return {}
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as err:
        raise _Invalid(
            "parse",
            f"The arguments for tool '{call.name}' are not valid JSON: {err.msg} at line "
            f"{err.lineno} column {err.colno} (character {err.pos}): "
            f"…{_excerpt(text, err.pos)}…",
        ) from None
    except _NotFinite as err:
        raise _Invalid("parse", _not_finite_message(call.name, text, err.literal)) from None
    except RecursionError:
        raise _Invalid(
            "parse", f"The arguments for tool '{call.name}' are nested too deeply."
        ) from None
    except ValueError:  # the one other failure: an integer longer than int() converts
        raise _Invalid(
            "parse",
            f"The arguments for tool '{call.name}' could not be read: a number has more "
            f"than {sys.get_int_max_str_digits()} digits; send it as a string.",
        ) from None
    if not isinstance(value, dict):
        raise _Invalid(
            "parse",
            f"The arguments for tool '{call.name}' must be a JSON object, got "
            f"{a_json_type(value)}.",
        )
    return value


def _not_finite_message(tool: str, text: str, literal: str) -> str:
    shown = literal if len(literal) <= 24 else literal[:12] + "…" + literal[-8:]
    if literal[-1:].isalpha():
        what = "is not a number JSON allows"
    else:
        what = "is too large for a number (beyond ±1.8e308)"
    pos = text.find(literal)
    where = ""
    if pos >= 0 and text.count(literal) == 1:
        where = f" (character {pos}: …{_excerpt(text, pos)}…)"
    return (
        f"The arguments for tool '{tool}' are not valid JSON: {shown} {what}{where}; send a "
        "finite number (or null, or a string, where the schema allows it)."
    )


def _excerpt(text: str, pos: int, width: int = 20) -> str:
    start = max(0, pos - width)
    return text[start:pos] + "⟨here⟩" + text[pos : pos + width]


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _coerce_result(raw: object) -> ToolResult | None:
    if isinstance(raw, ToolResult):
        return raw
    if isinstance(raw, str):
        return ToolResult.text(raw)
    return None
