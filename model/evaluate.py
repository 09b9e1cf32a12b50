"""Score a model's tool use on the corpus's held-out tasks, one teacher-forced turn at a time.

Every step of every :class:`~agent_runtime.model.corpus.Task` is asked of the model with the
conversation before it (``task.messages(upto=k)``: earlier expected calls and their results are
given, not the model's own), greedily. Scores, each a fraction with its count:

* ``tool`` -- steps that expect calls: the names called equal the expected ones, as a multiset;
* ``args`` -- the same steps: every call's name and arguments equal the expected ones (arguments
  parsed as JSON and compared as values: ``1 == 1.0``, key order ignored, ``true != 1``);
* ``no_call`` -- tasks that need no call (small talk, requests no offered tool can serve): the
  model made none (an answer after tool results that calls again fails ``answer_uses_result``);
* ``schema_valid`` -- every call the model made: it names an offered tool and its arguments are a
  JSON object valid against that tool's ``input_schema`` (the dispatcher's own validation,
  :func:`agent_runtime.schema.compile_schema`);
* ``answer_uses_result`` -- the final answer of tasks whose last turn follows tool results: it
  contains every one of ``task.answer_values``;
* ``multi_step`` -- ``multi_step`` tasks whose every call step had the right arguments.

A model that raises on a turn never stops the evaluation: the step counts as wrong in every
score it takes part in, and as one invalid call in ``schema_valid`` (a model that fails cannot
pass the schema check by calling nothing). Each score is also kept per task kind.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent_runtime.backend import ModelBackend, ModelSettings
from agent_runtime.schema import compile_schema
from agent_runtime.types import ToolCall, ToolSpec

from .corpus import Task

__all__ = [
    "DEFAULT_SETTINGS",
    "METRICS",
    "EvalReport",
    "Score",
    "StepOutcome",
    "evaluate",
    "score_step",
]

METRICS = (
    "tool",
    "args",
    "no_call",
    "schema_valid",
    "answer_uses_result",
    "multi_step",
)
"""The scores an :class:`EvalReport` keeps, in the order reports print them."""

DEFAULT_SETTINGS = ModelSettings(temperature=0.0, max_tokens=256)
"""Greedy, and room for twice the longest reference turn of the held-out sets (~110 tokens)."""

_NO_CALL_KINDS = ("no_call", "not_offered")


@dataclass
class Score:
    """How many of ``total`` cases were right."""

    right: int = 0
    total: int = 0

    def add(self, ok: bool) -> None:
        self.total += 1
        self.right += int(ok)

    @property
    def fraction(self) -> float | None:
        """``right / total``; ``None`` when nothing was scored."""
        return self.right / self.total if self.total else None

    def __str__(self) -> str:
        if not self.total:
            return "-"
        return f"{self.right / self.total:.3f} ({self.right}/{self.total})"


@dataclass
class StepOutcome:
    """What one teacher-forced turn earned (``None``: the score does not apply to the step)."""

    tool: bool | None = None
    args: bool | None = None
    no_call: bool | None = None
    answer_uses_result: bool | None = None
    calls_made: int = 0
    calls_valid: int = 0
    truncated: bool = False
    """The turn stopped at ``max_tokens`` (its last call, if any, is cut short)."""


def _empty_scores() -> dict[str, Score]:
    return {m: Score() for m in METRICS}


@dataclass
class EvalReport:
    """Scores over a set of tasks, overall and per task kind, with the failures seen."""

    scores: dict[str, Score] = field(default_factory=_empty_scores)
    by_kind: dict[str, dict[str, Score]] = field(default_factory=dict)
    tasks: int = 0
    steps: int = 0
    model_errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    """The first few model errors, as ``Type: message``."""
    truncated_turns: int = 0
    """Turns that stopped at ``max_tokens``."""
    invalid_calls_truncated: int = 0
    """Of the calls that failed ``schema_valid``, those in truncated turns (a grammar cannot
    finish a call the token budget cuts short)."""
    output_tokens: int = 0
    seconds: float = 0.0
    """Wall time of the model's turns (prefill and decoding; scoring left out)."""

    def add(self, kind: str, metric: str, ok: bool) -> None:
        self.scores[metric].add(ok)
        self.by_kind.setdefault(kind, _empty_scores())[metric].add(ok)

    def fraction(self, metric: str) -> float | None:
        return self.scores[metric].fraction

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens over the turns' wall time (prefill included)."""
        return self.output_tokens / self.seconds if self.seconds > 0 else None

    def fractions(self) -> dict[str, float | None]:
        """Every overall score as a fraction (``None`` where nothing was scored)."""
        return {m: self.scores[m].fraction for m in METRICS}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: fractions, counts, per-kind fractions, errors and speed."""

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "tasks": self.tasks,
            "steps": self.steps,
            "model_errors": self.model_errors,
            "truncated_turns": self.truncated_turns,
            "invalid_calls_truncated": self.invalid_calls_truncated,
            "scores": {m: rounded(s.fraction) for m, s in self.scores.items()},
            "counts": {m: [s.right, s.total] for m, s in self.scores.items()},
            "by_kind": {
                kind: {m: rounded(s.fraction) for m, s in scores.items() if s.total}
                for kind, scores in sorted(self.by_kind.items())
            },
            "output_tokens": self.output_tokens,
            "seconds": round(self.seconds, 3),
            "tokens_per_s": rounded(self.tokens_per_s),
        }

    def table(self) -> str:
        """The scores as a text table: one row per metric, overall then per kind."""
        kinds = sorted(self.by_kind)
        head = ["metric", "all", *kinds]
        rows = [head]
        for m in METRICS:
            rows.append([m, str(self.scores[m]), *(str(self.by_kind[k][m]) for k in kinds)])
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows
        )


# ---------------------------------------------------------------------------- comparing


def _same(a: Any, b: Any) -> bool:
    """JSON values equal as values: numbers by value (``1 == 1.0``), booleans only to booleans,
    objects whatever their key order, arrays in order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _refuse_constant(literal: str) -> Any:
    raise ValueError(f"{literal} is not JSON")


def _arguments(call: ToolCall) -> dict[str, Any] | None:
    """The call's arguments as a JSON object (empty text: ``{}``), or None when they are not
    one (bad JSON, ``NaN``, a non-object)."""
    text = call.arguments
    if not text.strip():
        return {}
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or not _finite(value):
        return None
    return value


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _schema_valid(call: ToolCall, args: dict[str, Any] | None, tools: dict[str, ToolSpec]) -> bool:
    spec = tools.get(call.name)
    if spec is None or args is None:
        return False
    try:
        return compile_schema(spec.input_schema).is_valid(args)
    except Exception:  # noqa: BLE001 - a schema that cannot be compiled validates nothing
        return False


def _matches(
    made: Sequence[tuple[str, dict[str, Any] | None]],
    expected: Sequence[tuple[str, dict[str, Any]]],
) -> bool:
    """Whether the calls made equal the expected ones as a multiset of (name, arguments)."""
    if len(made) != len(expected):
        return False
    left = list(made)
    for name, args in expected:
        for i, (got_name, got_args) in enumerate(left):
            if got_name == name and got_args is not None and _same(got_args, args):
                del left[i]
                break
        else:
            return False
    return True


def score_step(task: Task, index: int, calls: Sequence[ToolCall], text: str) -> StepOutcome:
    """Score the model's turn (``calls`` and ``text``) at step ``index`` of ``task``."""
    step = task.steps[index]
    tools = {t.name: t for t in task.tools}
    parsed = [(c.name, _arguments(c)) for c in calls]
    out = StepOutcome(calls_made=len(calls))
    out.calls_valid = sum(
        _schema_valid(c, args, tools) for c, (_, args) in zip(calls, parsed, strict=True)
    )
    if step.calls:
        out.tool = Counter(c.name for c in calls) == Counter(name for name, _ in step.calls)
        out.args = _matches(parsed, step.calls)
    else:
        out.no_call = not calls
    last = index == len(task.steps) - 1
    if last and len(task.steps) > 1:
        out.answer_uses_result = not calls and all(v in text for v in task.answer_values)
    return out


# ---------------------------------------------------------------------------- running


async def evaluate(
    model: ModelBackend,
    tasks: Iterable[Task],
    *,
    settings: ModelSettings | None = None,
    progress: Callable[[int], None] | None = None,
) -> EvalReport:
    """Run every step of every task, teacher-forced and greedy, and score the turns.

    ``settings`` override :data:`DEFAULT_SETTINGS` field by field; the temperature is always 0.
    ``progress`` is called with the number of tasks done after each task.
    """
    chosen = DEFAULT_SETTINGS.merged(settings).model_copy(update={"temperature": 0.0})
    report = EvalReport()
    for done, task in enumerate(tasks, start=1):
        report.tasks += 1
        steps_args_right = True
        for k, step in enumerate(task.steps):
            report.steps += 1
            started = time.perf_counter()
            try:
                response = await model.complete(task.messages(upto=k), task.tools, chosen)
            except Exception as exc:  # noqa: BLE001 - a failing model scores wrong, never crashes
                report.seconds += time.perf_counter() - started
                report.model_errors += 1
                if len(report.error_samples) < 5:
                    report.error_samples.append(f"{type(exc).__name__}: {exc}")
                outcome = StepOutcome(
                    tool=False if step.calls else None,
                    args=False if step.calls else None,
                    no_call=None if step.calls else False,
                    answer_uses_result=(
                        False if k == len(task.steps) - 1 and len(task.steps) > 1 else None
                    ),
                    calls_made=1,
                    calls_valid=0,
                )
            else:
                report.seconds += time.perf_counter() - started
                report.output_tokens += response.usage.output_tokens
                message = response.message
                outcome = score_step(task, k, message.tool_calls, message.text)
                outcome.truncated = response.finish_reason == "length"
            _record(report, task, outcome)
            if outcome.args is False:
                steps_args_right = False
        if task.kind == "multi_step":
            report.add(task.kind, "multi_step", steps_args_right)
        if progress is not None:
            progress(done)
    return report


def _record(report: EvalReport, task: Task, outcome: StepOutcome) -> None:
    kind = task.kind
    for metric in ("tool", "args", "answer_uses_result"):
        value = getattr(outcome, metric)
        if value is not None:
            report.add(kind, metric, value)
    if outcome.no_call is not None and kind in _NO_CALL_KINDS:
        report.add(kind, "no_call", outcome.no_call)
    for i in range(outcome.calls_made):
        report.add(kind, "schema_valid", i < outcome.calls_valid)
    if outcome.truncated:
        report.truncated_turns += 1
        report.invalid_calls_truncated += outcome.calls_made - outcome.calls_valid
