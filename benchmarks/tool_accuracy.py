"""Tool-use accuracy of a local checkpoint (default: the shipped embedded model) on the held-out
tasks of the training corpus, with and without grammar-constrained decoding.

Two sets of ``--n`` tasks each (``agent_runtime.model.corpus.evaluation_tasks``): *seen* (tool
families from training, with held-out phrasings and argument values) and *unseen* (families built
only from held-out words). Every step of every task is asked teacher-forced and greedy
(``agent_runtime.model.evaluate``), once with ``constrain=True`` and once with ``constrain=False``.

Scores (fractions): right tool(s) chosen (``tool``), exact arguments (``args``), no call where
none is needed (``no_call``: small talk, requests no offered tool serves), schema-valid calls
(``schema_valid``, over both sets; ``schema_valid_finished`` leaves out calls cut off at
``max_tokens``), final answers that contain the tool results' values
(``answer_uses_result``, over both sets and per set), multi-step tasks with every call right
(``multi_step``). Also the load time (``LocalMoEModel.from_pretrained`` wall time, median of 3)
and output tokens per second over the turns' wall time (prefill included).

The last line is one JSON object: the constrained run's ``seen_tool``, ``seen_args``,
``seen_no_call``, ``unseen_tool``, ``unseen_args``, ``schema_valid``, ``answer_uses_result``,
``unseen_no_call``, ``seen_multi_step``, ``unseen_multi_step``, the per-set answer scores,
``load_s``, ``n``, an ``unconstrained`` object with the same scores, and ``details``.

    python benchmarks/tool_accuracy.py                 # 200 + 200 tasks, both modes
    python benchmarks/tool_accuracy.py --n 20          # a quick look
    python benchmarks/tool_accuracy.py --model DIR     # another checkpoint folder
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import anyio

from agent_runtime.model.backend import LocalMoEModel
from agent_runtime.model.corpus import evaluation_tasks
from agent_runtime.model.embedded import EMBEDDED_MODEL_DIR
from agent_runtime.model.evaluate import EvalReport, evaluate

SETS: tuple[Literal["seen", "unseen"], ...] = ("seen", "unseen")
PER_SET = ("tool", "args", "no_call", "answer_uses_result", "multi_step")
POOLED = ("schema_valid", "answer_uses_result")


def load_seconds(path: Path, threads: int | None, rounds: int = 3) -> float:
    """Median wall time of ``from_pretrained`` (weights, tokenizer, template, defaults)."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        LocalMoEModel.from_pretrained(path, threads=threads)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_mode(
    path: Path, constrain: bool, n: int, seed: int, threads: int | None
) -> dict[str, EvalReport]:
    model = LocalMoEModel.from_pretrained(path, threads=threads, constrain=constrain)
    reports: dict[str, EvalReport] = {}
    for which in SETS:
        reports[which] = anyio.run(evaluate, model, evaluation_tasks(which, n, seed=seed))
    return reports


def _pooled(reports: dict[str, EvalReport], metric: str) -> float | None:
    """One score over every set (right and total added up)."""
    right = sum(int(r.scores[metric].right) for r in reports.values())
    total = sum(int(r.scores[metric].total) for r in reports.values())
    return right / total if total else None


def summary(reports: dict[str, EvalReport]) -> dict[str, Any]:
    """The JSON keys of one mode: per-set scores, then the pooled ones."""
    out: dict[str, Any] = {}
    for which in SETS:
        for metric in PER_SET:
            value = reports[which].fraction(metric)
            out[f"{which}_{metric}"] = None if value is None else round(value, 4)
    for metric in POOLED:
        value = _pooled(reports, metric)
        out[metric] = None if value is None else round(value, 4)
    # The grammar's own guarantee: calls the model finished within max_tokens.
    right = sum(int(r.scores["schema_valid"].right) for r in reports.values())
    finished = sum(
        int(r.scores["schema_valid"].total) - r.invalid_calls_truncated for r in reports.values()
    )
    out["schema_valid_finished"] = round(right / finished, 4) if finished else None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--model", type=Path, default=EMBEDDED_MODEL_DIR, help="checkpoint folder")
    ap.add_argument("--n", type=int, default=200, help="tasks per set (seen, unseen)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    load_s = load_seconds(args.model, args.threads)
    print(f"model {args.model}: loads in {load_s:.2f} s (median of 3)", flush=True)
    results: dict[str, dict[str, EvalReport]] = {}
    for mode, constrain in (("constrained", True), ("unconstrained", False)):
        t0 = time.perf_counter()
        results[mode] = run_mode(args.model, constrain, args.n, args.seed, args.threads)
        for which, report in results[mode].items():
            rate = report.tokens_per_s
            print(
                f"\n{mode}, {which} ({report.tasks} tasks, {report.steps} turns, "
                f"{report.model_errors} model errors, {report.truncated_turns} cut at max_tokens, "
                f"{'-' if rate is None else f'{rate:.0f}'} output tok/s):",
                flush=True,
            )
            print(report.table(), flush=True)
            for sample in report.error_samples:
                print(f"  model error: {sample}")
        print(f"({mode}: {time.perf_counter() - t0:.0f} s)", flush=True)

    line: dict[str, Any] = summary(results["constrained"])
    line["load_s"] = round(load_s, 3)
    line["n"] = args.n
    line["unconstrained"] = summary(results["unconstrained"])
    line["details"] = {
        "model": str(args.model),
        "seed": args.seed,
        "threads": args.threads,
        **{
            mode: {which: report.to_dict() for which, report in reports.items()}
            for mode, reports in results.items()
        },
    }
    print(json.dumps(line, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
