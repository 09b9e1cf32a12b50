"""From a Python signature to a tool's JSON Schema and argument validator.

Everything here runs once, when a function is decorated, so that a call costs only one pydantic
validation: the signature is read, a pydantic model is built with one field per parameter, and
its JSON Schema (2020-12, as pydantic emits it) becomes the tool's input schema. Docstring
descriptions are attached to the fields. A parameter annotated with ``ToolContext`` is not part
of the schema; the toolset injects the running call's context there.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PydanticUserError, TypeAdapter, create_model
from pydantic.errors import PydanticSchemaGenerationError
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import CoreSchema
from typing_extensions import is_typeddict

from agent_runtime.errors import UserError
from agent_runtime.toolset import ToolContext

from .docstrings import parse_docstring

__all__ = ["FunctionSchema", "function_schema"]

_MODEL_CONFIG = ConfigDict(
    extra="forbid",
    protected_namespaces=(),
    arbitrary_types_allowed=False,
)
_RESERVED = frozenset(dir(BaseModel))


class _CompactJsonSchema(GenerateJsonSchema):
    """Pydantic's generator without the ``title`` it derives from every field name.

    Those titles repeat the property name and cost the model tokens on every request.
    """

    def field_title_should_be_set(self, schema: CoreSchema) -> bool:  # noqa: ARG002
        return False


@dataclass(frozen=True, slots=True)
class FunctionSchema:
    """What a decorated function needs at call time, computed once."""

    name: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    arguments_model: type[BaseModel]
    """Validates and coerces the model's arguments (dicts into nested models, enums ...)."""
    field_to_param: tuple[tuple[str, str], ...] | None
    """``(field, parameter)`` pairs when some parameter needed a field alias; else ``None``."""
    positional_only: tuple[str, ...]
    """Positional-only parameters, passed positionally in this order."""
    ctx_param: str | None
    """The parameter that receives the ``ToolContext``, if any."""
    is_async: bool
    takes_self: bool
    """The function's first parameter is ``self``/``cls``: it must be bound before it can run."""


def function_schema(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    localns: Mapping[str, Any] | None = None,
) -> FunctionSchema:
    """Read ``fn``'s signature, type hints and docstring into a ``FunctionSchema``.

    Raises ``UserError`` for what cannot be a tool: ``*args``/``**kwargs``, generators, a type
    pydantic cannot describe, an annotation that does not resolve.
    """
    if not callable(fn):
        raise UserError(f"{fn!r} is not callable, so it cannot be a tool")
    tool_name = name or getattr(fn, "__name__", None)
    if not tool_name or tool_name == "<lambda>":
        raise UserError(f"{fn!r} has no usable __name__: pass name=... to @tool")
    target = _hints_target(fn)
    if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
        raise UserError(
            f"tool {tool_name!r} is a generator; a tool must return its result "
            "(report intermediate progress through ToolContext.report_progress)"
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot read the signature of tool {tool_name!r}: {exc}") from exc
    hints = _type_hints(target, tool_name, localns)
    doc = parse_docstring(inspect.getdoc(fn))

    fields: dict[str, Any] = {}
    field_to_param: list[tuple[str, str]] = []
    aliased = False
    positional_only: list[str] = []
    ctx_param: str | None = None
    takes_self = False
    for index, param in enumerate(signature.parameters.values()):
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            raise UserError(
                f"tool {tool_name!r} takes *{param.name}; a tool's arguments must be named "
                "parameters so they can be described in a JSON Schema"
            )
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            raise UserError(
                f"tool {tool_name!r} takes **{param.name}; a tool's arguments must be named "
                "parameters so they can be described in a JSON Schema"
            )
        if index == 0 and param.name in ("self", "cls") and inspect.isfunction(fn):
            takes_self = True
            continue
        annotation = hints.get(param.name, Any)
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            positional_only.append(param.name)
        if _is_context(annotation):
            if ctx_param is not None:
                raise UserError(f"tool {tool_name!r} has two ToolContext parameters")
            ctx_param = param.name
            continue
        field_name = param.name
        if field_name.startswith("_") or field_name in _RESERVED:
            field_name = f"arg{index}_"
            aliased = True
        field_to_param.append((field_name, param.name))
        fields[field_name] = (annotation, _field_info(param, annotation, doc.params))

    try:
        model: type[BaseModel] = create_model(
            _model_name(tool_name), __config__=_MODEL_CONFIG, **fields
        )
        input_schema = _object_schema(model.model_json_schema(schema_generator=_CompactJsonSchema))
    except (PydanticSchemaGenerationError, PydanticUserError, TypeError, ValueError) as exc:
        raise UserError(
            f"cannot build a JSON Schema for the parameters of tool {tool_name!r}: {exc}"
        ) from exc

    return FunctionSchema(
        name=tool_name,
        description=doc.description if description is None else description,
        input_schema=input_schema,
        output_schema=_output_schema(hints.get("return"), tool_name),
        arguments_model=model,
        field_to_param=tuple(field_to_param) if aliased else None,
        positional_only=tuple(positional_only),
        ctx_param=ctx_param,
        is_async=_is_async(fn),
        takes_self=takes_self,
    )


# --------------------------------------------------------------------------- helpers


def _hints_target(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The object whose ``__annotations__`` describe ``fn``'s parameters."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.isfunction(fn) or inspect.ismethod(fn):
        return fn
    call = getattr(type(fn), "__call__", None)  # noqa: B004  (a callable instance)
    return call if call is not None else fn


def _type_hints(
    target: Callable[..., Any], tool_name: str, localns: Mapping[str, Any] | None
) -> dict[str, Any]:
    namespace = dict(localns or {})
    try:
        return typing.get_type_hints(target, localns=namespace, include_extras=True)
    except NameError:
        # ``ToolContext`` is often imported only under ``TYPE_CHECKING``; let it resolve anyway.
        namespace.setdefault("ToolContext", ToolContext)
        try:
            return typing.get_type_hints(target, localns=namespace, include_extras=True)
        except Exception as exc:
            raise _unresolved(tool_name, exc) from exc
    except Exception as exc:  # TypeError for a bad annotation
        raise _unresolved(tool_name, exc) from exc


def _unresolved(tool_name: str, exc: Exception) -> UserError:
    return UserError(
        f"cannot resolve the type annotations of tool {tool_name!r}: {exc}. Define the "
        "types it uses at module level (or before the function, in the same scope)"
    )


def _is_context(annotation: Any) -> bool:
    """``ToolContext``, a subclass, ``Annotated[...]`` of one, or ``ToolContext | None``."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            return False
        annotation = members[0]
    return isinstance(annotation, type) and issubclass(annotation, ToolContext)


def _field_info(param: inspect.Parameter, annotation: Any, docs: Mapping[str, str]) -> FieldInfo:
    kwargs: dict[str, Any] = {}
    if param.default is not inspect.Parameter.empty:
        kwargs["default"] = param.default
    description = docs.get(param.name)
    if description and not _has_explicit_description(annotation):
        kwargs["description"] = description
    if param.name.startswith("_") or param.name in _RESERVED:
        kwargs["alias"] = param.name
    if isinstance(param.default, FieldInfo):
        # `param: str = Field(min_length=1, ...)`: the Field carries the constraints and default.
        declared = param.default
        kwargs.pop("default")
        if declared.description:
            kwargs.pop("description", None)
        merged: FieldInfo = FieldInfo.merge_field_infos(declared, **kwargs)
        return merged
    info: FieldInfo = Field(**kwargs)
    return info


def _has_explicit_description(annotation: Any) -> bool:
    """``Annotated[int, Field(description=...)]`` wins over the docstring."""
    if typing.get_origin(annotation) is not Annotated:
        return False
    return any(
        isinstance(meta, FieldInfo) and meta.description for meta in typing.get_args(annotation)
    )


def _model_name(tool_name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in tool_name)
    return f"{cleaned}_args"


def _object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Put the object keywords first and make sure the ones tool schemas need are there."""
    schema.pop("title", None)
    out: dict[str, Any] = {
        "type": "object",
        "properties": schema.pop("properties", {}),
        "required": schema.pop("required", []),
        "additionalProperties": schema.pop("additionalProperties", False),
    }
    schema.pop("type", None)
    out.update(schema)  # $defs and anything else pydantic emitted
    return out


def _output_schema(annotation: Any, tool_name: str) -> dict[str, Any] | None:
    """A JSON Schema for structured results, when the return type is an object type."""
    if annotation is None:
        return None
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    structured = (
        (isinstance(annotation, type) and issubclass(annotation, BaseModel))
        or is_typeddict(annotation)
        or (isinstance(annotation, type) and dataclasses.is_dataclass(annotation))
    )
    if not structured:
        return None
    try:
        schema = TypeAdapter(annotation).json_schema(
            mode="serialization", schema_generator=_CompactJsonSchema
        )
    except (PydanticSchemaGenerationError, PydanticUserError, TypeError, ValueError) as exc:
        raise UserError(
            f"cannot build an output schema for the return type of tool {tool_name!r}: {exc}"
        ) from exc
    return schema


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    inner = fn
    while isinstance(inner, functools.partial):
        inner = inner.func
    call = getattr(type(inner), "__call__", None)  # noqa: B004
    return not inspect.isfunction(inner) and inspect.iscoroutinefunction(call)
