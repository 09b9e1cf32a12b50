"""The ``@tool`` decorator: a Python function becomes a tool the model can call.

``@tool`` reads the signature, type hints and docstring once, at decoration, and returns a
``Tool``: still callable like the function, plus a ``ToolSpec`` (what the model is told) and a
lean ``call`` path (validate, run, normalise) used by ``FunctionToolset``. Sync functions run in
a worker thread so a slow one does not stall the event loop and the other tools running beside
it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, Unpack, overload

import anyio.to_thread

from agent_runtime.errors import UserError
from agent_runtime.toolset import ToolContext
from agent_runtime.types import ToolAnnotations, ToolResult, ToolSpec

from .options import ToolOptions, check_options
from .results import to_tool_result
from .schema import FunctionSchema, function_schema

if TYPE_CHECKING:
    from .function_toolset import FunctionToolset

__all__ = ["Tool", "ToolOptions", "tool"]

P = ParamSpec("P")
R = TypeVar("R")


_HINT_OPTIONS = frozenset({"title", "read_only", "destructive", "idempotent", "open_world"})


class Tool(Generic[P, R]):
    """A function offered to a model as a tool.

    Calling a ``Tool`` calls the function, so decorating does not change how Python code uses
    it. ``spec`` is what the model sees; ``call`` is how a toolset runs it with the model's
    arguments. ``as_toolset()`` lets ``Agent(tools=[my_tool])`` accept it directly.
    """

    def __init__(self, fn: Callable[P, R], **options: Unpack[ToolOptions]) -> None:
        if isinstance(fn, Tool):
            raise UserError(f"{fn.name!r} is already a tool")
        check_options(options)
        schema = function_schema(
            fn,
            name=options.get("name"),
            description=options.get("description"),
            localns=_defining_scope_locals(fn),
        )
        hints = (options.get("annotations") or ToolAnnotations()).model_copy()
        for key, value in options.items():
            if key in _HINT_OPTIONS and value is not None:
                setattr(hints, key, value)
        spec = ToolSpec(
            name=schema.name,
            description=schema.description,
            input_schema=schema.input_schema,
            output_schema=schema.output_schema,
            annotations=hints,
            origin="local",
            requires_approval=options.get("requires_approval", False),
        )
        self._init(fn, schema, spec)

    @staticmethod
    def from_schema(
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
    ) -> Tool[..., Any]:
        """A tool from a name, a JSON Schema and a callable: what catalogues provide.

        The model is offered ``input_schema`` (normalised like any tool's); calls are validated
        against it, and ``fn`` (sync or async) receives the arguments as keyword arguments,
        plus the ``ToolContext`` in a parameter annotated with it. ``description`` defaults to
        ``fn``'s docstring; the other options are those of ``@tool``. Raises ``UserError`` for
        a schema that is not one, or a callable that cannot take the schema's properties.
        """
        from .schema_tool import SchemaTool

        return SchemaTool(
            name,
            input_schema,
            fn,
            description=description,
            output_schema=output_schema,
            annotations=annotations,
            title=title,
            read_only=read_only,
            destructive=destructive,
            idempotent=idempotent,
            open_world=open_world,
            requires_approval=requires_approval,
        )

    def _init(self, fn: Callable[P, R], schema: FunctionSchema, spec: ToolSpec) -> None:
        self.fn: Callable[P, R] = fn
        self.spec: ToolSpec = spec
        self._schema = schema
        self._validate = schema.arguments_model.model_validate
        self.__wrapped__ = fn
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            try:
                setattr(self, attr, getattr(fn, attr))
            except AttributeError:
                pass

    # ------------------------------------------------------------------ the function face

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Tool[P, R]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> Tool[..., R]: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> Tool[..., R]:
        """A ``@tool`` method accessed through an instance is a tool bound to that instance."""
        if instance is None or not self._schema.takes_self:
            return self
        bound: Tool[..., R] = Tool.__new__(Tool)
        bound._init(
            types.MethodType(self.fn, instance),
            _replace_takes_self(self._schema),
            self.spec,
        )
        return bound

    def __repr__(self) -> str:
        return f"<Tool {self.name!r} wrapping {self.fn!r}>"

    # ------------------------------------------------------------------ the tool face

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def takes_ctx(self) -> bool:
        """Whether the function asks for the running call's ``ToolContext``."""
        return self._schema.ctx_param is not None

    @property
    def needs_binding(self) -> bool:
        """A method decorated in a class body: use it through an instance."""
        return self._schema.takes_self

    async def call(self, arguments: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        """Validate ``arguments``, run the function, and normalise what it returned.

        Exceptions from the function propagate: the dispatcher turns them into error results.
        A sync function runs in a worker thread; if the dispatcher cancels the call (timeout),
        the thread is abandoned (Python cannot stop it) and the call returns at once.
        """
        schema = self._schema
        if schema.takes_self:
            raise UserError(
                f"tool {self.name!r} is a method: offer it through an instance (obj.{self.name})"
            )
        kwargs: dict[str, Any] = self._validate(arguments).__dict__
        if schema.field_to_param is not None:
            kwargs = {param: kwargs[field] for field, param in schema.field_to_param}
        if schema.ctx_param is not None:
            kwargs[schema.ctx_param] = ctx
        args: tuple[Any, ...] = ()
        if schema.positional_only:
            args = tuple(kwargs.pop(p) for p in schema.positional_only)
        fn: Callable[..., Any] = self.fn
        if schema.is_async:
            value = await fn(*args, **kwargs)
        else:
            value = await anyio.to_thread.run_sync(
                functools.partial(fn, *args, **kwargs), abandon_on_cancel=True
            )
            if inspect.isawaitable(value):  # a sync wrapper around an async function
                value = await value
        return to_tool_result(value)

    def as_toolset(self) -> FunctionToolset:
        """A toolset holding just this tool (what ``Agent(tools=[my_tool])`` uses)."""
        from .function_toolset import FunctionToolset

        return FunctionToolset([self])


def _replace_takes_self(schema: FunctionSchema) -> FunctionSchema:
    return dataclasses.replace(schema, takes_self=False)


@overload
def tool(fn: Callable[P, R], /) -> Tool[P, R]: ...


@overload
def tool(**options: Unpack[ToolOptions]) -> Callable[[Callable[P, R]], Tool[P, R]]: ...


def tool(
    fn: Callable[P, R] | None = None, /, **options: Unpack[ToolOptions]
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """Make a function a tool: ``@tool`` or ``@tool(name=..., read_only=True, ...)``.

    The input schema comes from the type hints, the descriptions from the docstring (Google,
    Sphinx or NumPy style). The options are ``ToolOptions``.
    """
    check_options(options)

    def make(func: Callable[P, R]) -> Tool[P, R]:
        return Tool(func, **options)

    return make(fn) if fn is not None else make


def _defining_scope_locals(fn: Callable[..., Any]) -> Mapping[str, Any] | None:
    """The locals of the scope that defines ``fn``, if it is a nested function and that scope
    is still running (as it is while a decorator in it runs).

    With ``from __future__ import annotations`` a nested function's hints are strings naming
    types that may exist only in the enclosing function's scope; ``typing.get_type_hints``
    cannot see that scope, so the tool hands it over. The scope is found by what it runs, not
    by counting frames: the nearest frame on the stack whose code holds ``fn``'s code (directly,
    or inside a class body or function nested in it).
    """
    if "<locals>" not in getattr(fn, "__qualname__", ""):
        return None
    try:
        code = getattr(inspect.unwrap(fn), "__code__", None)
    except ValueError:  # a __wrapped__ cycle
        return None
    if not isinstance(code, types.CodeType):
        return None
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        if _holds(frame.f_code, code):
            return dict(frame.f_locals)
        frame = frame.f_back
    return None


def _holds(outer: types.CodeType, inner: types.CodeType) -> bool:
    """Whether ``inner`` is ``outer``'s nested code (a function, class body or lambda in it)."""
    return any(
        const is inner or (isinstance(const, types.CodeType) and _holds(const, inner))
        for const in outer.co_consts
    )
