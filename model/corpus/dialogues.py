"""Whole tool-use conversations: a request, the calls it needs, their results, the answer.

A :class:`Task` is one conversation with what a good assistant does at each of its turns, so the
same object serves training (its messages, rendered in the chat format) and evaluation (its
expected calls and the values the final answer must contain). Kinds: one call, parallel calls
(one tool twice or two tools), two steps where the second call needs the first one's result, no
call (small talk, or a request no offered tool can serve), and a failing tool.

Request phrasings and argument cues come in two disjoint sets: training phrasings and held-out
ones the evaluation uses.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from agent_runtime.types import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolResult,
    ToolResultMessage,
    ToolSpec,
    UserMessage,
)

from .families import Family, Param, ToolDef, make_family, real_families
from .lexicon import Split, Words

__all__ = ["Phrasing", "Step", "Task", "TaskKind", "make_task"]

TaskKind = Literal["single", "parallel", "multi_step", "no_call", "not_offered", "tool_error"]
Phrasing = Literal["train", "eval"]

_FRAMES: dict[Phrasing, tuple[str, ...]] = {
    "train": (
        "{Ask} the {topic}{args}.",
        "Please {ask} the {topic}{args}.",
        "Can you {ask} the {topic}{args}?",
        "I need you to {ask} the {topic}{args}.",
        "{ask} {topic}{args}",
        "Could you {ask} the {topic}{args}, please?",
        "I'd like to {ask} the {topic}{args}.",
        "Hey, {ask} the {topic}{args}.",
        "{Ask} {topic}{args} now.",
    ),
    "eval": (
        "Would you {ask} the {topic}{args} for me?",
        "Go ahead and {ask} the {topic}{args}.",
        "Time to {ask} the {topic}{args}!",
        "My request: {ask} the {topic}{args}.",
    ),
}
_CUES: dict[Phrasing, tuple[str, ...]] = {
    "train": (
        " for {cue} {v}",
        " with {cue} {v}",
        ", {cue}: {v}",
        " where {cue} is {v}",
        " ({cue} = {v})",
    ),
    "eval": (" using {v} as the {cue}", " with the {cue} set to {v}", " whose {cue} is {v}"),
}
_JOINS = (" and", ",", "")
_THEN: dict[Phrasing, tuple[str, ...]] = {
    "train": ("{a}, then {b}.", "{a} and then {b}.", "First {a}; after that {b}."),
    "eval": ("{a}. Once you have it, {b}.", "Start by asking to {a}, and next {b}."),
}
_BOTH: dict[Phrasing, tuple[str, ...]] = {
    "train": ("{a}, and {b}.", "{a}. Also {b}.", "{a} and {b}."),
    "eval": ("Two things: {a}; {b}.", "{a}, plus {b}."),
}
_SMALL_TALK = (
    ("Hi!", "Hello! What can I do for you?"),
    ("Hello there.", "Hello! How can I help?"),
    ("Thanks, that's all.", "You're welcome."),
    ("Thank you!", "Glad to help."),
    ("Who are you?", "I am an assistant that can use tools for you."),
    ("Good morning", "Good morning! What do you need?"),
    ("ok", "Let me know if you need anything else."),
)
_INSTRUCTIONS = (
    "Use the tools to answer; say which tool gave each fact.",
    "Be brief.",
    "You are a helpful assistant.",
    "Answer with the tool results.",
    "You are a careful assistant. Call tools when they help.",
)


@dataclass
class Step:
    """One assistant turn: the calls it makes (with their results) or, last, the answer text."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    results: list[tuple[str, bool]] = field(default_factory=list)  # (text, is_error)
    text: str = ""


@dataclass
class Task:
    """A conversation and what a good assistant does in it."""

    kind: TaskKind
    tools: list[ToolSpec]
    user: str
    steps: list[Step]
    answer_values: list[str]
    system: str | None = None

    def messages(self, upto: int | None = None) -> list[Message]:
        """The conversation; with ``upto`` = k, only what precedes the k-th assistant turn."""
        out: list[Message] = []
        if self.system:
            out.append(SystemMessage(content=self.system))
        out.append(UserMessage(content=self.user))
        index = 0
        for k, step in enumerate(self.steps):
            if upto is not None and k >= upto:
                break
            calls = []
            for name, args in step.calls:
                calls.append(
                    ToolCall(
                        id=f"functions.{name}:{index}",
                        name=name,
                        arguments=json.dumps(args, ensure_ascii=False),
                    )
                )
                index += 1
            out.append(AssistantMessage(text=step.text, tool_calls=calls))
            for call, (text, is_error) in zip(calls, step.results, strict=True):
                out.append(
                    ToolResultMessage(
                        tool_call_id=call.id,
                        tool_name=call.name,
                        result=ToolResult.text(text, is_error=is_error),
                    )
                )
        return out


# ---------------------------------------------------------------------------- requests


def _say(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        items = [_say(v) for v in value]
        return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else items[0]
    if isinstance(value, str) and " " in value:
        return f'"{value}"'
    return str(value)


class _Builder:
    def __init__(self, rng: random.Random, words: Words, phrasing: Phrasing) -> None:
        self.rng = rng
        self.words = words
        self.phrasing = phrasing

    def arguments(self, tool: ToolDef) -> tuple[dict[str, Any], list[tuple[Param, Any]]]:
        """Arguments for a call, and the (param, value) pairs the request must state."""
        args: dict[str, Any] = {}
        said: list[tuple[Param, Any]] = []
        for p in tool.params:
            if p.default is not None and self.rng.random() < 0.5:
                args[p.name] = p.default  # left unsaid: the description's default applies
                continue
            if not p.required and self.rng.random() < 0.5:
                continue
            value = p.sample(self.words)
            args[p.name] = value
            said.append((p, value))
        return args, said

    def clause(self, tool: ToolDef, said: list[tuple[Param, Any]], frame: str | None = None) -> str:
        """The request for one call, in a frame of this phrasing set."""
        rng = self.rng
        parts: list[str] = []
        for p, value in said:
            if p.kind == "object":
                for child in p.children:
                    if child.name in value:
                        parts.append(self._cue(child.cue, value[child.name]))
            else:
                parts.append(self._cue(p.cue, value))
        args = ""
        for i, part in enumerate(parts):
            join = rng.choice(_JOINS) if i and not part.startswith(",") else ""
            args += join + part
        ask = rng.choice(tool.verb.asks)
        frame = frame or rng.choice(_FRAMES[self.phrasing])
        return frame.format(ask=ask, Ask=ask.capitalize(), topic=tool.topic, args=args)

    def _cue(self, cue: str, value: Any) -> str:
        return self.rng.choice(_CUES[self.phrasing]).format(cue=cue, v=_say(value))

    def own_ask(self, tool: ToolDef) -> tuple[dict[str, Any], str] | None:
        """A hand-written tool's own request frame, filled; None when its frames cannot say
        what the drawn arguments need."""
        frame = self.rng.choice(tool.asks)
        args: dict[str, Any] = {}
        values: dict[str, str] = {}
        for p in tool.params:
            if "{" + p.name + "}" in frame:
                value = p.sample(self.words)
                args[p.name] = value
                values[p.name] = _say(value)
            elif p.default is not None:
                args[p.name] = p.default
            elif p.required:
                return None
        return args, frame.format(**values)


def _answer(rng: random.Random, tool: str, topic: str, result: str) -> str:
    flat = " ".join(result.replace("{", " ").replace("}", " ").replace('"', "").split())
    return rng.choice(
        (
            f"{tool} returned {flat}.",
            f"The {topic} result: {flat}.",
            f"Here is what I found with {tool}: {flat}.",
            f"Done. {flat}.",
        )
    )


# ---------------------------------------------------------------------------- tasks


def _offer(
    rng: random.Random, words: Words, main: list[ToolDef], pool: list[Family]
) -> list[ToolSpec]:
    tools = list(main)
    for _ in range(rng.choice((1, 1, 2))):
        other = rng.choice(pool) if pool and rng.random() < 0.5 else make_family(words)
        tools.extend(rng.sample(other.tools, min(len(other.tools), rng.choice((1, 2)))))
    unique: dict[str, ToolDef] = {}
    for t in tools:  # a distractor never replaces a tool of the same name the task needs
        unique.setdefault(t.name, t)
    chosen = list(unique.values())[:5]
    rng.shuffle(chosen)
    return [t.spec() for t in chosen]


def make_task(
    rng: random.Random,
    split: Split,
    pool: list[Family],
    *,
    phrasing: Phrasing = "train",
    kind: TaskKind | None = None,
    fresh_families: bool = True,
) -> Task:
    """One conversation. ``pool`` holds the split's named families (the seen ones for training
    and the seen evaluation, the held-out ones for the unseen evaluation); with
    ``fresh_families`` a task may also use a family made up on the spot from the split's words."""
    words = Words(rng, split)
    b = _Builder(rng, words, phrasing)
    if kind is None:
        kinds: tuple[TaskKind, ...] = (
            "single",
            "parallel",
            "multi_step",
            "no_call",
            "not_offered",
            "tool_error",
        )
        kind = rng.choices(kinds, weights=(50, 14, 10, 6, 14, 4))[0]

    def family() -> Family:
        if fresh_families and rng.random() < 0.5:
            return make_family(words)
        if split == "train" and rng.random() < 0.25:
            return rng.choice(real_families(words))
        return rng.choice(pool)

    system = rng.choice(_INSTRUCTIONS) if rng.random() < 0.4 else None
    if kind == "no_call":
        fam = family()
        user, reply = rng.choice(_SMALL_TALK)
        tools = _offer(rng, words, fam.tools, pool)
        return Task(kind, tools, user, [Step(text=reply)], [], system)

    if kind == "not_offered":
        wanted = family()
        tool = rng.choice(wanted.tools)
        offered = [t for t in wanted.tools if t.name != tool.name and rng.random() < 0.5]
        args, said = b.arguments(tool)
        user = (
            b.clause(tool, said)
            if not tool.asks
            else (b.own_ask(tool) or (args, b.clause(tool, said)))[1]
        )
        tools = _offer(rng, words, offered, pool)
        tools = [t for t in tools if t.name != tool.name]
        ask = tool.verb.asks[0]
        reply = rng.choice(
            (
                f"None of my tools can {ask} the {tool.topic}.",
                f"Sorry, I have no tool to {ask} the {tool.topic}.",
            )
        )
        return Task(kind, tools, user, [Step(text=reply)], [], system)

    if kind == "multi_step":
        return _multi_step(rng, words, b, pool, system)

    fam = family()
    tool = rng.choice(fam.tools)
    if kind == "parallel":
        return _parallel(rng, words, b, fam, tool, family, pool, system)

    filled = b.own_ask(tool) if tool.asks else None
    if filled is not None:
        args, user = filled
    else:
        args, said = b.arguments(tool)
        user = b.clause(tool, said)
    result, values = tool.make_result(words, args)
    error = kind == "tool_error"
    if error:
        result = rng.choice(
            (
                f"{tool.topic} service unavailable",
                f"no {tool.topic} matches the request",
                "permission denied",
                f"timeout after {rng.randint(2, 60)} seconds",
            )
        )
        values = [result]
        text = f"The {tool.name} tool failed: {result}."
    else:
        text = _answer(rng, tool.name, tool.topic, result)
    tools = _offer(rng, words, fam.tools, pool)
    steps = [Step([(tool.name, args)], [(result, error)]), Step(text=text)]
    return Task(kind, tools, user, steps, values, system)


def _parallel(
    rng: random.Random,
    words: Words,
    b: _Builder,
    fam: Family,
    tool: ToolDef,
    family: Any,
    pool: list[Family],
    system: str | None,
) -> Task:
    single = [p for p in tool.params if p.required and p.kind not in ("object",)]
    calls: list[tuple[ToolDef, dict[str, Any]]] = []
    if len(tool.params) == 1 and single and not tool.asks and rng.random() < 0.5:
        p = single[0]
        v1, v2 = p.sample(words), p.sample(words)
        calls = [(tool, {p.name: v1}), (tool, {p.name: v2})]
        first = b.clause(tool, [(p, v1)])
        user = first.rstrip(".?!") + f" and also {b._cue(p.cue, v2).strip(' ,')}."
        main = fam.tools
    else:
        other_fam = family()
        other = rng.choice(other_fam.tools)
        if other.name == tool.name:
            other_fam = make_family(words)
            other = rng.choice(other_fam.tools)
        clauses = []
        for t in (tool, other):
            filled = b.own_ask(t) if t.asks else None
            if filled is None:
                args, said = b.arguments(t)
                text = b.clause(t, said, "{ask} the {topic}{args}")
            else:
                args, text = filled
            calls.append((t, args))
            clauses.append(text.rstrip(".?!"))
        clauses[1] = clauses[1][0].lower() + clauses[1][1:]
        user = rng.choice(_BOTH[b.phrasing]).format(
            a=clauses[0][0].upper() + clauses[0][1:], b=clauses[1]
        )
        main = fam.tools + [other]
    results = [t.make_result(words, a) for t, a in calls]
    answer = " ".join(
        _answer(rng, t.name, t.topic, r) for (t, _), (r, _) in zip(calls, results, strict=True)
    )
    values = [v for _, vs in results for v in vs[:1]]
    steps = [
        Step([(t.name, a) for t, a in calls], [(r, False) for r, _ in results]),
        Step(text=answer),
    ]
    return Task("parallel", _offer(rng, words, main, pool), user, steps, values, system)


def _multi_step(
    rng: random.Random, words: Words, b: _Builder, pool: list[Family], system: str | None
) -> Task:
    """Find a thing by name, then act on it by the id the first result gave."""
    first = make_family(words, tools=1, verbs=("search", "get"))
    finder = first.tools[0]
    key = f"{first.topic.replace(' ', '_')}_id"
    finder.params = (Param("name", "name", True),)
    finder.result = (("id", "code"), ("name", "name"))
    second = make_family(words, tools=1)
    actor = second.tools[0]
    extra = tuple(p for p in actor.params if p.name != key)[:1]
    actor.params = (Param(key, "code", True), *extra)
    name = words.name()
    ident = words.value("code")
    found = json.dumps({"id": ident, "name": name}, ensure_ascii=False)
    act_args, said = b.arguments(actor)
    act_args[key] = ident
    said = [(p, v) for p, v in said if p.name != key]
    a = b.clause(finder, [(finder.params[0], name)], "{ask} the {topic}{args}")
    c = b.clause(actor, said, "{ask} its {topic}{args}")
    user = rng.choice(_THEN[b.phrasing]).format(a=a, b=c)
    user = user[0].upper() + user[1:]
    result, values = actor.make_result(words, act_args)
    steps = [
        Step([(finder.name, {"name": name})], [(found, False)]),
        Step([(actor.name, act_args)], [(result, False)]),
        Step(text=_answer(rng, actor.name, actor.topic, result)),
    ]
    tools = _offer(rng, words, [finder, actor], pool)
    return Task("multi_step", tools, user, steps, values, system)
