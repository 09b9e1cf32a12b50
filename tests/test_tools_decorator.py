"""The @tool decorator: schemas from signatures and docstrings, calling, result conversion."""

from __future__ import annotations

import dataclasses
import enum
import threading
from typing import Annotated, Any, Literal

import anyio
import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from agent_runtime.errors import UserError
from agent_runtime.tools import Tool, tool
from agent_runtime.toolset import ToolContext
from agent_runtime.types import (
    BinaryPart,
    DataPart,
    ResourceLink,
    TextPart,
    ToolAnnotations,
    ToolResult,
)


def checked(t: Tool[..., Any]) -> dict[str, Any]:
    """Every schema we emit must be a valid 2020-12 schema; returns the input schema."""
    Draft202012Validator.check_schema(t.spec.input_schema)
    if t.spec.output_schema is not None:
        Draft202012Validator.check_schema(t.spec.output_schema)
    schema = t.spec.input_schema
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert isinstance(schema["properties"], dict)
    assert isinstance(schema["required"], list)
    return schema


def valid(schema: dict[str, Any], instance: Any) -> bool:
    return Draft202012Validator(schema).is_valid(instance)


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    """A postal address."""

    street: str
    zip_code: str | None = None


class Person(BaseModel):
    name: str
    address: Address
    tags: list[str] = []


@dataclasses.dataclass
class Point:
    x: float
    y: float


class Summary(TypedDict):
    total: int
    label: str


def ctx() -> ToolContext:
    return ToolContext(call_id="c1", tool_name="t")


# --------------------------------------------------------------------------- input schemas


def test_schema_marks_parameters_without_defaults_required() -> None:
    @tool
    def add(a: int, b: int = 2) -> int:
        return a + b

    schema = checked(add)
    assert schema["properties"] == {
        "a": {"type": "integer"},
        "b": {"type": "integer", "default": 2},
    }
    assert schema["required"] == ["a"]
    assert not valid(schema, {"a": 1, "c": 3})
    assert not valid(schema, {"b": 1})


def test_tool_without_parameters_has_empty_object_schema() -> None:
    @tool
    def ping() -> str:
        return "pong"

    assert checked(ping) == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }


def test_nested_models_are_referenced_through_defs() -> None:
    @tool
    def register(person: Person) -> str:
        return person.name

    schema = checked(register)
    assert schema["properties"]["person"] == {"$ref": "#/$defs/Person"}
    assert set(schema["$defs"]) == {"Person", "Address"}
    assert schema["$defs"]["Address"]["description"] == "A postal address."
    assert valid(schema, {"person": {"name": "a", "address": {"street": "s"}}})
    assert not valid(schema, {"person": {"name": "a", "address": {"zip_code": "1"}}})


def test_enum_parameter_lists_its_values() -> None:
    @tool
    def paint(color: Color) -> str:
        return color.value

    schema = checked(paint)
    ref = schema["properties"]["color"]["$ref"]
    assert schema["$defs"][ref.rsplit("/", 1)[1]]["enum"] == ["red", "green"]
    assert valid(schema, {"color": "red"})
    assert not valid(schema, {"color": "blue"})


def test_optional_parameter_accepts_null() -> None:
    @tool
    def find(limit: int | None = None) -> str:
        return str(limit)

    schema = checked(find)
    assert schema["properties"]["limit"] == {
        "anyOf": [{"type": "integer"}, {"type": "null"}],
        "default": None,
    }
    assert schema["required"] == []
    assert valid(schema, {"limit": None}) and valid(schema, {"limit": 3})
    assert not valid(schema, {"limit": "3"})


def test_union_parameter_uses_any_of() -> None:
    @tool
    def lookup(key: int | str) -> str:
        return str(key)

    schema = checked(lookup)
    assert schema["properties"]["key"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert valid(schema, {"key": 1}) and valid(schema, {"key": "a"})
    assert not valid(schema, {"key": [1]})


def test_list_dict_and_literal_parameters() -> None:
    @tool
    def configure(
        names: list[str],
        weights: dict[str, float],
        mode: Literal["fast", "slow"] = "fast",
    ) -> str:
        return mode

    schema = checked(configure)
    props = schema["properties"]
    assert props["names"] == {"type": "array", "items": {"type": "string"}}
    assert props["weights"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["mode"]["enum"] == ["fast", "slow"] and props["mode"]["default"] == "fast"
    assert valid(schema, {"names": ["a"], "weights": {"x": 1.5}})
    assert not valid(schema, {"names": ["a"], "weights": {"x": 1.5}, "mode": "medium"})


def test_unannotated_parameter_accepts_anything() -> None:
    @tool
    def echo(value, times: int = 1):  # type: ignore[no-untyped-def]
        return value

    schema = checked(echo)
    assert schema["properties"]["value"] == {}
    assert valid(schema, {"value": {"any": ["thing"]}})


def test_field_titles_are_left_out() -> None:
    @tool
    def register(person: Person, note: str = "") -> str:
        return note

    schema = checked(register)
    assert "title" not in schema
    assert "title" not in schema["properties"]["note"]
    assert all("title" not in p for p in schema["$defs"]["Person"]["properties"].values())


def test_google_docstring_gives_descriptions() -> None:
    @tool
    def weather(city: str, days: int = 1) -> str:
        """Get the forecast for a city.

        Uses the national weather service.

        Args:
            city: The city to look up,
                e.g. "Paris".
            days (int): How many days ahead.

        Returns:
            The forecast as text.
        """
        return city

    schema = checked(weather)
    assert schema["properties"]["city"]["description"] == 'The city to look up, e.g. "Paris".'
    assert schema["properties"]["days"]["description"] == "How many days ahead."
    assert weather.description == (
        "Get the forecast for a city.\n\nUses the national weather service.\n\n"
        "Returns:\n    The forecast as text."
    )


def test_sphinx_docstring_gives_descriptions() -> None:
    @tool
    def weather(city: str, days: int = 1) -> str:
        """Get the forecast for a city.

        :param city: The city to look up.
        :type city: str
        :param int days: How many days
            ahead.
        """
        return city

    schema = checked(weather)
    assert schema["properties"]["city"]["description"] == "The city to look up."
    assert schema["properties"]["days"]["description"] == "How many days ahead."
    assert weather.description == "Get the forecast for a city."


def test_numpy_docstring_gives_descriptions() -> None:
    @tool
    def weather(city: str, days: int = 1) -> str:
        """Get the forecast for a city.

        Parameters
        ----------
        city : str
            The city to look up.
        days : int, optional
            How many days ahead.

        Returns
        -------
        str
            The forecast.
        """
        return city

    schema = checked(weather)
    assert schema["properties"]["city"]["description"] == "The city to look up."
    assert schema["properties"]["days"]["description"] == "How many days ahead."
    assert weather.description.startswith("Get the forecast for a city.\n\nReturns\n-------")
    assert "city : str" not in weather.description


def test_annotated_field_description_wins_over_docstring() -> None:
    @tool
    def scale(factor: Annotated[float, Field(description="From Field", gt=0)]) -> float:
        """Scale.

        Args:
            factor: From the docstring.
        """
        return factor

    schema = checked(scale)
    assert schema["properties"]["factor"] == {
        "type": "number",
        "exclusiveMinimum": 0,
        "description": "From Field",
    }


def test_tool_context_is_injected_and_not_in_schema() -> None:
    seen: list[ToolContext] = []

    @tool
    async def work(n: int, context: ToolContext) -> str:
        seen.append(context)
        return str(n)

    schema = checked(work)
    assert list(schema["properties"]) == ["n"] and schema["required"] == ["n"]
    assert work.takes_ctx
    the_ctx = ctx()
    result = anyio.run(work.call, {"n": 4}, the_ctx)
    assert result.text_content == "4"
    assert seen == [the_ctx]


def test_optional_tool_context_is_injected_too() -> None:
    @tool
    def work(n: int, context: ToolContext | None = None) -> str:
        assert context is not None
        return context.call_id

    assert list(checked(work)["properties"]) == ["n"]
    assert anyio.run(work.call, {"n": 1}, ctx()).text_content == "c1"


def test_tool_context_resolves_even_when_imported_only_for_type_checking() -> None:
    namespace: dict[str, Any] = {}  # a module whose globals lack ToolContext
    exec("def probe(n: 'int', c: 'ToolContext') -> str:\n    return c.call_id\n", namespace)
    probe = tool(namespace["probe"])
    assert list(checked(probe)["properties"]) == ["n"]
    assert anyio.run(probe.call, {"n": 1}, ctx()).text_content == "c1"


def test_sync_wrapper_returning_a_coroutine_is_awaited() -> None:
    async def inner(n: int) -> int:
        return n + 1

    def wrapper(n: int) -> Any:
        return inner(n)

    assert anyio.run(tool(wrapper).call, {"n": 1}, ctx()).content == [DataPart(data=2)]


def test_self_is_skipped_and_a_method_binds_through_its_instance() -> None:
    class Counter:
        def __init__(self) -> None:
            self.total = 0

        @tool
        def bump(self, by: int = 1) -> int:
            """Add to the counter."""
            self.total += by
            return self.total

    counter = Counter()
    bound = counter.bump
    assert "self" not in checked(bound)["properties"]
    assert Counter.bump.needs_binding and not bound.needs_binding
    assert anyio.run(bound.call, {"by": 5}, ctx()).content == [DataPart(data=5)]
    assert counter.bump(by=2) == 7  # still callable like the method
    with pytest.raises(UserError, match="is a method"):
        anyio.run(Counter.bump.call, {"by": 1}, ctx())


def test_reserved_and_underscored_parameter_names_round_trip() -> None:
    @tool
    def fmt(json: str, schema: int, _private: bool = False) -> str:
        return f"{json}-{schema}-{_private}"

    schema = checked(fmt)
    assert list(schema["properties"]) == ["json", "schema", "_private"]
    result = anyio.run(fmt.call, {"json": "j", "schema": 2, "_private": True}, ctx())
    assert result.text_content == "j-2-True"


def test_positional_only_parameters_are_passed_positionally() -> None:
    @tool
    def divide(a: float, b: float, /, round_to: int = 2) -> float:
        return round(a / b, round_to)

    assert checked(divide)["required"] == ["a", "b"]
    result = anyio.run(divide.call, {"a": 1, "b": 3}, ctx())
    assert result.content == [DataPart(data=0.33)]


def test_nested_function_may_use_types_from_its_enclosing_scope() -> None:
    class Local(BaseModel):
        value: int

    @tool
    def use(item: Local) -> int:
        return item.value * 2

    schema = checked(use)
    assert schema["$defs"]["Local"]["properties"] == {"value": {"type": "integer"}}
    assert anyio.run(use.call, {"item": {"value": 21}}, ctx()).content == [DataPart(data=42)]


def test_nested_function_with_options_may_use_types_from_its_enclosing_scope() -> None:
    class Local(BaseModel):
        value: int

    @tool(name="double")
    def use(item: Local) -> int:
        return item.value * 2

    assert use.name == "double"
    assert checked(use)["$defs"]["Local"]["properties"] == {"value": {"type": "integer"}}


def test_unknown_option_is_refused_like_an_unknown_keyword() -> None:
    with pytest.raises(TypeError, match="read_olny"):
        tool(read_olny=True)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="colour"):
        Tool(lambda: None, colour="red")  # type: ignore[call-arg]


# --------------------------------------------------------------------------- decorator options


def test_decorator_arguments_set_name_description_and_flags() -> None:
    @tool(
        name="remove_file",
        description="Delete a file.",
        destructive=True,
        idempotent=True,
        requires_approval=True,
    )
    def rm(path: str) -> str:
        """Ignored docstring.

        Args:
            path: The file.
        """
        return path

    checked(rm)
    assert rm.name == "remove_file" and rm.spec.name == "remove_file"
    assert rm.description == "Delete a file."
    assert rm.spec.input_schema["properties"]["path"]["description"] == "The file."
    assert rm.spec.annotations == ToolAnnotations(destructive=True, idempotent=True)
    assert rm.spec.requires_approval is True
    assert rm.spec.origin == "local"


def test_annotations_object_is_merged_with_flag_shortcuts() -> None:
    given = ToolAnnotations(title="Reader", open_world=False)

    @tool(annotations=given, read_only=True)
    def read(path: str) -> str:
        return path

    assert read.spec.annotations == ToolAnnotations(
        title="Reader", open_world=False, read_only=True
    )
    assert given.read_only is None  # the caller's object is not modified


def test_tool_is_still_callable_like_the_function() -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @tool
    async def add_later(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    assert anyio.run(add_later, 2, 3) == 5
    assert add.__name__ == "add" and add.__doc__ == "Add two numbers."
    assert isinstance(add, Tool)


# --------------------------------------------------------------------------- calling


@pytest.mark.anyio
async def test_sync_tool_runs_in_a_worker_thread() -> None:
    loop_thread = threading.get_ident()

    @tool
    def where() -> int:
        return threading.get_ident()

    @tool
    async def where_async() -> int:
        return threading.get_ident()

    sync_result = await where.call({}, ctx())
    async_result = await where_async.call({}, ctx())
    assert sync_result.content != [DataPart(data=loop_thread)]
    assert async_result.content == [DataPart(data=loop_thread)]


@pytest.mark.anyio
async def test_cancelling_a_blocked_sync_tool_returns_without_waiting_for_it() -> None:
    release = threading.Event()

    @tool
    def block() -> str:
        release.wait(10)
        return "done"

    with anyio.move_on_after(0.05) as scope:
        await block.call({}, ctx())
    try:
        assert scope.cancelled_caught
        assert not release.is_set()  # the call gave up while the thread was still blocked
    finally:
        release.set()


@pytest.mark.anyio
async def test_arguments_are_coerced_into_models_and_enums() -> None:
    received: list[Any] = []

    @tool
    def register(person: Person, color: Color = Color.RED) -> str:
        received.extend([person, color])
        return "ok"

    await register.call(
        {"person": {"name": "Ada", "address": {"street": "Main"}}, "color": "green"}, ctx()
    )
    person, color = received
    assert isinstance(person, Person) and isinstance(person.address, Address)
    assert person.address.street == "Main"
    assert color is Color.GREEN


@pytest.mark.anyio
async def test_defaults_are_filled_in_when_arguments_are_missing() -> None:
    @tool
    def greet(name: str, greeting: str = "Hello") -> str:
        return f"{greeting}, {name}"

    assert (await greet.call({"name": "Ada"}, ctx())).text_content == "Hello, Ada"


@pytest.mark.anyio
async def test_exceptions_from_the_function_propagate() -> None:
    @tool
    def broken() -> str:
        raise RuntimeError("disk on fire")

    @tool
    async def broken_async() -> str:
        raise ValueError("bad value")

    with pytest.raises(RuntimeError, match="disk on fire"):
        await broken.call({}, ctx())
    with pytest.raises(ValueError, match="bad value"):
        await broken_async.call({}, ctx())


# --------------------------------------------------------------------------- results


async def _result_of(value: Any) -> ToolResult:
    @tool
    async def produce() -> Any:
        return value

    return await produce.call({}, ctx())


@pytest.mark.anyio
async def test_string_result_becomes_text() -> None:
    result = await _result_of("hi")
    assert result.content == [TextPart(text="hi")] and result.structured_content is None


@pytest.mark.anyio
async def test_none_result_becomes_empty_text() -> None:
    assert (await _result_of(None)).content == [TextPart(text="")]


@pytest.mark.anyio
async def test_tool_result_passes_through_unchanged() -> None:
    given = ToolResult.error("nope")
    assert await _result_of(given) is given


@pytest.mark.anyio
async def test_bytes_become_an_octet_stream_part() -> None:
    result = await _result_of(b"\x00\x01")
    assert result.content == [BinaryPart(data=b"\x00\x01", media_type="application/octet-stream")]


@pytest.mark.anyio
async def test_content_parts_are_used_as_the_content() -> None:
    image = BinaryPart(data=b"\x89PNG", media_type="image/png")
    link = ResourceLink(uri="file:///a.txt")
    assert (await _result_of(image)).content == [image]
    assert (await _result_of([TextPart(text="see"), link])).content == [
        TextPart(text="see"),
        link,
    ]


@pytest.mark.anyio
async def test_dict_result_is_data_and_structured_content() -> None:
    result = await _result_of({"a": 1, "b": [True]})
    assert result.content == [DataPart(data={"a": 1, "b": [True]})]
    assert result.structured_content == {"a": 1, "b": [True]}


@pytest.mark.anyio
async def test_scalar_and_list_results_are_data_without_structured_content() -> None:
    for value in (3, 2.5, True, [1, "x"]):
        result = await _result_of(value)
        assert result.content == [DataPart(data=value)]
        assert result.structured_content is None


@pytest.mark.anyio
async def test_model_return_type_gives_output_schema_and_structured_content() -> None:
    @tool
    def locate(name: str) -> Address:
        return Address(street=name)

    checked(locate)
    assert locate.spec.output_schema is not None
    assert locate.spec.output_schema["required"] == ["street"]
    result = await locate.call({"name": "Main"}, ctx())
    assert result.structured_content == {"street": "Main", "zip_code": None}
    assert valid(locate.spec.output_schema, result.structured_content)
    assert result.content == [DataPart(data={"street": "Main", "zip_code": None})]


@pytest.mark.anyio
async def test_dataclass_and_typeddict_return_types_give_output_schemas() -> None:
    @tool
    def origin() -> Point:
        return Point(0.0, 1.5)

    @tool
    def summarise() -> Summary:
        return {"total": 3, "label": "x"}

    for t in (origin, summarise):
        checked(t)
        assert t.spec.output_schema is not None
    origin_result = await origin.call({}, ctx())
    assert origin_result.structured_content == {"x": 0.0, "y": 1.5}
    assert valid(origin.spec.output_schema or {}, origin_result.structured_content)
    summary = await summarise.call({}, ctx())
    assert valid(summarise.spec.output_schema or {}, summary.structured_content)


def test_plain_return_types_have_no_output_schema() -> None:
    @tool
    def count() -> int:
        return 1

    @tool
    def listing() -> list[Address]:
        return []

    assert count.spec.output_schema is None and listing.spec.output_schema is None


# --------------------------------------------------------------------------- decoration errors


def test_var_positional_is_rejected_at_decoration() -> None:
    def spread(*items: int) -> int:
        return sum(items)

    with pytest.raises(UserError, match=r"\*items"):
        tool(spread)


def test_var_keyword_is_rejected_at_decoration() -> None:
    def options(**opts: str) -> str:
        return ""

    with pytest.raises(UserError, match=r"\*\*opts"):
        tool(options)


def test_generator_is_rejected_at_decoration() -> None:
    def numbers() -> Any:
        yield 1

    with pytest.raises(UserError, match="generator"):
        tool(numbers)


def test_unresolvable_annotation_is_rejected_at_decoration() -> None:
    def lost(x: DoesNotExist) -> str:  # type: ignore[name-defined]  # noqa: F821
        return ""

    with pytest.raises(UserError, match="DoesNotExist"):
        tool(lost)


def test_type_pydantic_cannot_describe_is_rejected_at_decoration() -> None:
    class Opaque:
        pass

    def take(thing: Opaque) -> str:
        return ""

    with pytest.raises(UserError, match="take"):
        tool(take)


def test_lambda_needs_a_name() -> None:
    with pytest.raises(UserError, match="name="):
        tool(lambda x: x)
    named = tool(name="identity")(lambda x: x)
    assert named.name == "identity"


def test_two_context_parameters_are_rejected() -> None:
    def twice(a: ToolContext, b: ToolContext) -> str:
        return ""

    with pytest.raises(UserError, match="two ToolContext"):
        tool(twice)


def test_decorating_a_tool_again_is_rejected() -> None:
    @tool
    def once() -> str:
        return ""

    with pytest.raises(UserError, match="already a tool"):
        tool(once)


def test_field_default_carries_constraints_and_default() -> None:
    from pydantic import Field

    from agent_runtime.tools import tool as make_tool

    @make_tool
    def count(text: str = Field(min_length=1), limit: int = Field(default=10, le=100)) -> int:
        """Count words.

        Args:
            text: Any text.
            limit: At most this many.
        """
        return min(len(text.split()), limit)

    schema = count.spec.input_schema
    assert schema["required"] == ["text"]
    assert schema["properties"]["text"]["minLength"] == 1
    assert schema["properties"]["text"]["description"] == "Any text."
    assert schema["properties"]["limit"] == {
        "default": 10,
        "maximum": 100,
        "type": "integer",
        "description": "At most this many.",
    }
