"""Tool families for the procedural corpus: a domain noun and a few tools acting on it.

A family's tools share the noun and differ in the verb (``get_invoice``, ``delete_invoice``), so
the same-domain tools are each other's distractors; the request names the noun, and the verb
through one of its phrasings. Parameters are typed (strings of several shapes, integers, numbers,
enums, dates, booleans, arrays, one-level nested objects) and every tool knows how to make a
result. A few hand-written families (time, dates, temperatures, words, weather, money) cover the
tools people try first, the example agent's among them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agent_runtime.types import ToolAnnotations, ToolSpec

from .lexicon import VALUE_KINDS, VERBS, Verb, Words

__all__ = ["Family", "Param", "ToolDef", "make_family", "real_families"]

_PARAM_NAMES: dict[str, tuple[str, ...]] = {
    "word": ("query", "keyword", "slug", "handle", "label", "term"),
    "name": ("name", "owner", "city", "author", "customer", "recipient", "title"),
    "phrase": ("text", "message", "note", "subject", "body", "comment"),
    "code": ("id", "reference", "sku", "code", "ticket"),
    "email": ("email", "recipient_email", "contact"),
    "zone": ("timezone", "region", "zone"),
    "date": ("date", "start_date", "end_date", "due_date", "day"),
    "time": ("time", "start_time", "at"),
    "integer": ("count", "limit", "quantity", "year", "page", "number", "size"),
    "number": ("amount", "value", "price", "weight", "score"),
    "boolean": ("urgent", "notify", "public", "verbose", "archived"),
    "words": ("tags", "labels", "keywords"),
    "integers": ("ids", "numbers", "items"),
}
_ENUM_NAMES = ("unit", "mode", "status", "format", "priority", "level", "sort", "color", "kind")
_OBJECT_NAMES = ("filter", "options", "location", "range", "settings", "target")
_RESULT_KEYS = ("status", "result", "total", "id", "name", "value", "count", "url", "updated")
_DEFAULT_NOTES = (
    "Use '{d}' if the user gives none.",
    "Defaults to '{d}' when not given.",
    "Use '{d}' as local {p} if no {p} provided by the user.",
    "If the user does not say, use '{d}'.",
)


@dataclass
class Param:
    """One parameter: its JSON Schema, how it is filled, and for objects the nested ones."""

    name: str
    kind: str  # a lexicon value kind, "enum" or "object"
    required: bool
    description: str = ""
    enum: tuple[str, ...] = ()
    children: tuple[Param, ...] = ()
    default: str | None = None  # named in the description; used when the request omits it

    @property
    def cue(self) -> str:
        """How a request names this parameter: its name in words."""
        return self.name.replace("_", " ")

    def schema(self) -> dict[str, Any]:
        if self.kind == "enum":
            out: dict[str, Any] = {"type": "string", "enum": list(self.enum)}
        elif self.kind == "object":
            out = {
                "type": "object",
                "properties": {c.name: c.schema() for c in self.children},
                "required": [c.name for c in self.children if c.required],
            }
        else:
            out = dict(VALUE_KINDS[self.kind])
        if self.description:
            out["description"] = self.description
        return out

    def sample(self, words: Words) -> Any:
        if self.kind == "enum":
            return words.rng.choice(self.enum)
        if self.kind == "object":
            return {c.name: c.sample(words) for c in self.children}
        return words.value(self.kind)


@dataclass
class ToolDef:
    """A tool of a family: its spec's parts and its result's shape."""

    name: str
    verb: Verb
    topic: str  # the words a request uses for the family's noun phrase
    description: str
    params: tuple[Param, ...]
    result: tuple[tuple[str, str], ...]  # (key, value kind); one entry with key "" = a scalar
    asks: tuple[str, ...] = ()  # request frames of hand-written tools ({param} placeholders)
    read_only: bool = True

    def spec(self) -> ToolSpec:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {p.name: p.schema() for p in self.params},
            "required": [p.name for p in self.params if p.required],
        }
        return ToolSpec(
            name=self.name,
            description=self.description,
            input_schema=schema,
            annotations=ToolAnnotations(read_only=self.read_only),
        )

    def make_result(self, words: Words, arguments: dict[str, Any]) -> tuple[str, list[str]]:
        """A result text for a call, and the values a final answer must mention."""
        rng = words.rng
        if len(self.result) == 1 and self.result[0][0] == "":
            value = words.value(self.result[0][1])
            text = _plain(value)
            return text, [text]
        data: dict[str, Any] = {}
        for key, kind in self.result:
            data[key] = arguments.get(key) if key in arguments else words.value(kind)
        style = rng.random()
        if style < 0.45:
            text = json.dumps(data, ensure_ascii=False)
        elif style < 0.7:
            text = json.dumps(data, ensure_ascii=False, indent=2)
        else:
            text = "\n".join(f"{k}: {_plain(v)}" for k, v in data.items())
        return text, [_plain(v) for v in data.values()][:2]


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value)
    return str(value)


@dataclass
class Family:
    """A domain: the noun phrase and the tools on it."""

    topic: str
    tools: list[ToolDef] = field(default_factory=list)


def _param(words: Words, noun: str, taken: set[str], *, required: bool) -> Param:
    rng = words.rng
    roll = rng.random()
    if roll < 0.12:
        name = rng.choice(_ENUM_NAMES)
        values = tuple(
            dict.fromkeys(words.made_up(rng.choice((1, 2))) for _ in range(rng.randint(2, 4)))
        )
        param = Param(name, "enum", required, enum=values)
    elif roll < 0.2:
        name = rng.choice(_OBJECT_NAMES)
        inner: set[str] = set()
        children = tuple(_param(words, noun, inner, required=i == 0) for i in range(2))
        children = tuple(c for c in children if c.kind not in ("object",))
        param = Param(name, "object", required, children=children)
    else:
        kind = rng.choice(tuple(_PARAM_NAMES))
        if rng.random() < 0.15:
            name = words.made_up(rng.choice((1, 2)))
        elif kind in ("code", "name", "word") and rng.random() < 0.3:
            name = f"{noun.split()[-1]}_{rng.choice(('id', 'name', 'key'))}"
        else:
            name = rng.choice(_PARAM_NAMES[kind])
        param = Param(name, kind, required)
    if param.name in taken:
        param.name = f"{param.name}_{words.made_up(1)}"
    taken.add(param.name)
    if param.kind not in ("object", "boolean") and rng.random() < 0.15:
        param.description = f"The {param.cue} of the {noun}."
    if required and param.kind in ("word", "name", "zone", "code") and rng.random() < 0.1:
        default = str(param.sample(words))
        note = rng.choice(_DEFAULT_NOTES).format(d=default, p=param.cue)
        param.description = f"{param.description} {note}".strip()
        param.default = default
    return param


def make_family(
    words: Words, *, tools: int | None = None, verbs: tuple[str, ...] | None = None
) -> Family:
    """A random family from ``words``' split: a noun phrase and 1-4 tools with distinct verbs."""
    rng = words.rng
    topic = words.noun()
    if rng.random() < 0.3:
        topic = f"{topic} {words.noun()}"
    count = tools if tools is not None else rng.choice((1, 2, 2, 3))
    choices = VERBS if verbs is None else tuple(v for v in VERBS if v.name in verbs)
    picked = rng.sample(choices, min(count, len(choices)))
    prefix = f"{words.made_up(1)}__" if rng.random() < 0.15 else ""
    family = Family(topic)
    snake = topic.replace(" ", "_")
    for verb in picked:
        taken: set[str] = set()
        n_params = rng.choice((0, 1, 1, 1, 1, 2, 2, 2, 3))
        params = tuple(
            _param(words, topic, taken, required=i == 0 or rng.random() < 0.6)
            for i in range(n_params)
        )
        if rng.random() < 0.4:
            result: tuple[tuple[str, str], ...] = (
                ("", rng.choice(("integer", "word", "name", "date", "number", "code"))),
            )
        else:
            keys = rng.sample(_RESULT_KEYS, rng.randint(1, 3))
            result = tuple(
                (k, rng.choice(("word", "integer", "name", "date", "code", "number"))) for k in keys
            )
        order = rng.random()
        name = f"{verb.name}_{snake}" if order < 0.8 else f"{snake}_{verb.name}"
        desc = f"{verb.describes} the {topic}."
        if rng.random() < 0.4:
            desc = f"{desc[:-1]} {rng.choice(('by its details', 'for the user', 'in the system', 'right now', 'on request'))}."
        family.tools.append(
            ToolDef(
                name=prefix + name,
                verb=verb,
                topic=topic,
                description=desc,
                params=params,
                result=result,
                read_only=verb.name
                in ("get", "list", "search", "count", "check", "compute", "convert"),
            )
        )
    return family


def _verb(name: str) -> Verb:
    return next(v for v in VERBS if v.name == name)


def real_families(words: Words) -> list[Family]:
    """Hand-written families for everyday tools (fresh default values each call): time and
    dates, temperatures, text, weather, money."""
    rng = words.rng
    local = rng.choice(
        ("UTC", "Europe/London", "America/New_York", "Asia/Tokyo", str(words.value("zone")))
    )
    prefix = rng.choice(("", "", "time__", f"{words.made_up(1)}__"))
    tz_note = f"IANA timezone name (e.g. 'Europe/Paris'). Use '{local}' as local timezone if no timezone provided by the user."
    time_family = Family(
        "time",
        [
            ToolDef(
                prefix + "get_current_time",
                _verb("get"),
                "current time",
                "Get the current time in a specific timezone.",
                (Param("timezone", "zone", True, tz_note, default=local),),
                (
                    ("timezone", "zone"),
                    ("datetime", "datetime"),
                    ("day_of_week", "word"),
                    ("is_dst", "boolean"),
                ),
                asks=(
                    "What time is it in {timezone}?",
                    "What is the current time in {timezone}?",
                    "Tell me the time in {timezone}.",
                    "What time is it?",
                    "What's the time right now?",
                ),
            ),
            ToolDef(
                prefix + "convert_time",
                _verb("convert"),
                "time",
                "Convert a time between timezones.",
                (
                    Param(
                        "source_timezone",
                        "zone",
                        True,
                        tz_note.replace("IANA", "Source IANA"),
                        default=local,
                    ),
                    Param("time", "time", True, "Time to convert in 24-hour format (HH:MM)."),
                    Param(
                        "target_timezone",
                        "zone",
                        True,
                        tz_note.replace("IANA", "Target IANA"),
                        default=local,
                    ),
                ),
                (("source", "word"), ("target", "word")),
                asks=(
                    "Convert {time} from {source_timezone} to {target_timezone}.",
                    "What is {time} {source_timezone} time in {target_timezone}?",
                    "If it is {time} in {source_timezone}, what time is it in {target_timezone}?",
                ),
            ),
        ],
    )
    days = Family(
        "days",
        [
            ToolDef(
                "days_until",
                _verb("count"),
                "days until",
                "Count the days from today until a date.",
                (
                    Param(
                        "day", "date", True, "The date to count to (ISO format, e.g. 2027-01-01)."
                    ),
                ),
                (("", "integer"),),
                asks=(
                    "How many days until {day}?",
                    "How many days are left until {day}?",
                    "Count the days until {day}.",
                    "How long until {day}, in days?",
                ),
            ),
        ],
    )
    units = ("celsius", "fahrenheit")
    temperature = Family(
        "temperature",
        [
            ToolDef(
                "convert_temperature",
                _verb("convert"),
                "temperature",
                "Convert a temperature between Celsius and Fahrenheit.",
                (
                    Param("value", "number", True, "The temperature in the other unit."),
                    Param("to", "enum", False, "The unit to convert into.", enum=units),
                ),
                (("city", "word"), ("temperature", "number"), ("unit", "word")),
                asks=(
                    "Convert {value} degrees to {to}.",
                    "What is {value} degrees in {to}?",
                    "Convert a temperature of {value} to {to}.",
                ),
            ),
        ],
    )
    text = Family(
        "words",
        [
            ToolDef(
                "word_count",
                _verb("count"),
                "words",
                "Count the words in a text.",
                (Param("text", "phrase", True, "Any text."),),
                (("", "integer"),),
                asks=(
                    "How many words are in {text}?",
                    "Count the words in {text}.",
                    "Give me the word count of {text}.",
                ),
            ),
        ],
    )
    weather = Family(
        "weather",
        [
            ToolDef(
                "get_weather",
                _verb("get"),
                "weather",
                "Get the current weather for a city.",
                (Param("city", "name", True), Param("unit", "enum", False, enum=units)),
                (("temperature", "number"), ("conditions", "word")),
                asks=(
                    "What's the weather in {city}?",
                    "How is the weather in {city} in {unit}?",
                    "Is it warm in {city} today?",
                ),
            ),
        ],
    )
    money = Family(
        "currency",
        [
            ToolDef(
                "convert_currency",
                _verb("convert"),
                "currency",
                "Convert an amount of money from one currency to another.",
                (
                    Param("amount", "number", True),
                    Param("source", "currency", True),
                    Param("target", "currency", True),
                ),
                (("amount", "number"), ("currency", "currency")),
                asks=(
                    "Convert {amount} {source} to {target}.",
                    "How much is {amount} {source} in {target}?",
                ),
            ),
        ],
    )
    return [time_family, days, temperature, text, weather, money]
