"""Tools from a catalogue: a name, a JSON Schema and a callable, with no signature to read.

``@tool`` derives a tool's schema from type hints, which suits code written for the runtime.
Catalogues (OpenAPI operations, benchmark function docs, a registry of HTTP endpoints) come
the other way round: the schema is the source of truth and one generic callable often serves
many operations. ``Tool.from_schema(name, schema, fn)`` makes such a tool: the model is offered
the given schema (normalised like any other), the dispatcher validates calls against it, and
the callable receives the arguments as keyword arguments (plus the ``ToolContext`` where a
parameter is annotated with it).
"""

from __future__ import annotations

import copy
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

import anyio.to_thread

from agent_runtime.errors import SchemaError, UserError
from agent_runtime.schema import CompiledSchema, compile_schema, format_violations
from agent_runtime.toolset import ToolContext
from agent_runtime.types import ToolAnnotations, ToolResult, ToolSpec

from .decorator import Tool
from .docstrings import parse_docstring
from .results import to_tool_result
from .schema import _hints_target, _is_async, _is_context

__all__ = ["SchemaTool"]


class SchemaTool(Tool[..., Any]):
    """A tool whose input schema is given rather than read from a signature.

    Build it with :meth:`Tool.from_schema`. Calling it calls the function; ``call`` validates
    the arguments against the given schema, then passes them as keyword arguments.
    """

    def __init__(
        self,
        name: str,
        input_schema: Mapping[str, Any],
        fn: Callable[..., Any],
        *,
        description: str | None = None,
        output_schema: Mapping[str, Any] | None = None,
        annotations: ToolAnnotations | None = None,
        title: str | None = None,
        read_only: bool | None = None,
        destructive: bool | None = None,
        idempotent: bool | None = None,
        open_world: bool | None = None,
        requires_approval: bool = False,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"a tool needs a non-empty name, got {name!r}")
        if not callable(fn):
            raise UserError(f"tool {name!r}: {fn!r} is not callable")
        if not isinstance(input_schema, Mapping):
            raise UserError(
                f"tool {name!r}: the input schema must be a JSON object (a dict), got "
                f"{type(input_schema).__name__}"
            )
        given = copy.deepcopy(dict(input_schema))
        try:
            compiled = compile_schema(given)
        except SchemaError as exc:
            raise UserError(f"tool {name!r}: the input schema is not usable: {exc}") from None
        ctx_param, accepts = _parameters(name, fn)
        _check_fit(name, compiled.schema, accepts)
        hints = (annotations or ToolAnnotations()).model_copy()
        for field, value in (
            ("title", title),
            ("read_only", read_only),
            ("destructive", destructive),
            ("idempotent", idempotent),
            ("open_world", open_world),
        ):
            if value is not None:
                setattr(hints, field, value)
        if description is None:
            description = parse_docstring(inspect.getdoc(fn)).description
        self.fn = fn
        self.spec = ToolSpec(
            name=name,
            description=description,
            input_schema=given,
            output_schema=None if output_schema is None else copy.deepcopy(dict(output_schema)),
            annotations=hints,
            origin="local",
            requires_approval=requires_approval,
        )
        self._compiled: CompiledSchema = compiled
        self._ctx_param = ctx_param
        self._is_async_fn = _is_async(fn)
        self.__wrapped__ = fn
        for attr in ("__module__", "__doc__"):
            try:
                setattr(self, attr, getattr(fn, attr))
            except AttributeError:
                pass
        self.__name__ = self.__qualname__ = name

    def __get__(self, instance: object | None, owner: type | None = None) -> SchemaTool:
        """Not a method: the callable was bound (or not) when the tool was made."""
        return self

    def __repr__(self) -> str:
        return f"<Tool {self.name!r} (from a schema) calling {self.fn!r}>"

    @property
    def takes_ctx(self) -> bool:
        return self._ctx_param is not None

    @property
    def needs_binding(self) -> bool:
        return False

    async def call(self, arguments: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        """Check ``arguments`` against the given schema, run the callable, normalise its result.

        Invalid arguments raise ``UserError`` listing every violation (the dispatcher checks
        before it calls, so this matters to code that calls the tool directly).
        """
        compiled = self._compiled
        if not compiled.is_valid(arguments):
            raise UserError(format_violations(self.name, compiled.violations(arguments)))
        kwargs = dict(arguments)
        if self._ctx_param is not None:
            kwargs[self._ctx_param] = ctx
        fn = self.fn
        if self._is_async_fn:
            value = await fn(**kwargs)
        else:
            value = await anyio.to_thread.run_sync(
                functools.partial(fn, **kwargs), abandon_on_cancel=True
            )
            if inspect.isawaitable(value):
                value = await value
        return to_tool_result(value)


def _parameters(name: str, fn: Callable[..., Any]) -> tuple[str | None, _Accepts | None]:
    """The parameter that takes the ``ToolContext`` (if any), and what names ``fn`` accepts
    as keywords (``None`` when its signature cannot be read, or it takes ``**kwargs``)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None, None
    try:
        hints = typing.get_type_hints(
            _hints_target(fn), localns={"ToolContext": ToolContext}, include_extras=True
        )
    except Exception:  # noqa: BLE001 - unresolvable hints: only the ToolContext check needs them
        hints = {}
    ctx_param: str | None = None
    keywords: set[str] = set()
    needed: set[str] = set()
    open_ended = False
    for param in signature.parameters.values():
        annotation = hints.get(param.name, param.annotation)
        if _is_context(annotation) or annotation in ("ToolContext", "ToolContext | None"):
            if ctx_param is not None:
                raise UserError(f"tool {name!r}: {fn!r} has two ToolContext parameters")
            ctx_param = param.name
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            open_ended = True
        elif param.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        ):
            keywords.add(param.name)
            if param.default is inspect.Parameter.empty:
                needed.add(param.name)
        elif param.default is inspect.Parameter.empty:
            # *args or a positional-only parameter without a default: keywords cannot fill it.
            raise UserError(
                f"tool {name!r}: {fn!r} needs the positional parameter {param.name!r}; a tool "
                "made from a schema gets its arguments as keywords"
            )
    return ctx_param, _Accepts(keywords, needed, open_ended)


class _Accepts(typing.NamedTuple):
    keywords: set[str]
    """Parameters that take a keyword argument."""
    needed: set[str]
    """Those of them without a default."""
    open_ended: bool
    """``**kwargs``: any name is accepted."""


def _check_fit(name: str, schema: dict[str, Any], accepts: _Accepts | None) -> None:
    """Refuse, when the tool is made, a schema and callable that can never work together."""
    properties = schema.get("properties")
    if accepts is None or not isinstance(properties, dict):
        return  # no signature to compare, or a schema whose property names are not listed
    if not accepts.open_ended:
        unknown = sorted(set(properties) - accepts.keywords)
        if unknown:
            raise UserError(
                f"tool {name!r}: the schema has properties the callable does not take: "
                f"{', '.join(unknown)} (add those parameters, or take **kwargs)"
            )
    unfilled = sorted(accepts.needed - set(properties))
    if unfilled:
        raise UserError(
            f"tool {name!r}: the callable's parameters {', '.join(unfilled)} have no default "
            "and are not properties of the schema, so no call can give them (give them "
            "defaults, or add them to the schema)"
        )
