"""The procedural tool-use corpus: held-out material never reaches training, and every task is
consistent with its own tools (reference calls valid, answers mention the results)."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from agent_runtime.model.corpus import (
    evaluation_tasks,
    seen_families,
    training_tasks,
    unseen_families,
)
from agent_runtime.model.corpus.dialogues import _CUES, _FRAMES
from agent_runtime.model.corpus.lexicon import REAL_NOUNS, in_split
from agent_runtime.schema import compile_schema

TRAINING = list(itertools.islice(training_tasks(5), 1500))


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z]+", text)}


def test_every_vocabulary_is_split_a_fifth_held_out() -> None:
    held_out = [w for w in REAL_NOUNS if in_split(w, "eval")]
    assert 0.1 < len(held_out) / len(REAL_NOUNS) < 0.3
    assert all(not in_split(w, "train") for w in held_out)


def test_unseen_families_never_appear_in_training() -> None:
    unseen = {t.name for f in unseen_families() for t in f.tools}
    trained = {spec.name for task in TRAINING for spec in task.tools}
    assert not unseen & trained
    # nor do the held-out nouns they are named after (parameter names are a closed set: a
    # held-out noun such as "city" may still name a parameter)
    unseen_words = {w for f in unseen_families() for w in f.topic.split()}
    assert all(in_split(w, "eval") for w in unseen_words)
    trained_words = {w for name in trained for w in name.split("_") if w}
    assert not unseen_words & trained_words


def test_held_out_phrasings_never_appear_in_training() -> None:
    markers = [frame.split("{")[0].strip() for frame in _FRAMES["eval"] if frame.split("{")[0]]
    cues = [cue.split("{")[0].strip() for cue in _CUES["eval"]] + ["as the"]
    for task in TRAINING:
        for marker in markers + cues:
            assert marker not in task.user, (marker, task.user)


def test_argument_values_of_the_evaluation_are_held_out_words() -> None:
    """A value the model must copy comes from the held-out side of the vocabulary, unless the
    tool itself shows it (an enum, a default named in a description)."""
    checked = 0
    for which in ("seen", "unseen"):
        for task in evaluation_tasks(which, 150):  # type: ignore[arg-type]
            shown = json.dumps([s.input_schema for s in task.tools]).lower()
            for step in task.steps:
                for _, args in step.calls:
                    for word in re.findall(r"[A-Za-z]{4,}", json.dumps(args)):
                        if word.lower() not in shown and word not in ("true", "false"):
                            checked += 1
                            assert in_split(word, "eval"), (word, task.user)
    assert checked > 200


@pytest.mark.parametrize("which", ["train", "seen", "unseen"])
def test_reference_calls_are_valid_against_their_tools(which: str) -> None:
    tasks = TRAINING[:600] if which == "train" else evaluation_tasks(which, 300)  # type: ignore[arg-type]
    kinds = set()
    for task in tasks:
        kinds.add(task.kind)
        offered = {spec.name: spec for spec in task.tools}
        for step in task.steps:
            for name, args in step.calls:
                assert name in offered, (name, list(offered))
                assert compile_schema(offered[name].input_schema).is_valid(args), (name, args)
        final = task.steps[-1]
        assert not final.calls
        for value in task.answer_values:
            assert value in final.text, (value, final.text)
        if task.kind in ("no_call", "not_offered"):
            assert len(task.steps) == 1
    assert kinds == {"single", "parallel", "multi_step", "no_call", "not_offered", "tool_error"}


def test_a_request_no_offered_tool_serves_offers_no_such_tool() -> None:
    for task in evaluation_tasks("unseen", 60, kind="not_offered"):
        assert task.kind == "not_offered"
        reply = task.steps[0].text
        topic = reply.rsplit(" the ", 1)[1].rstrip(".")
        names = " ".join(s.name for s in task.tools)
        # the tool the request asks for is not among the offered ones
        verb = next(w for w in ("tool to ", "can ") if w in reply)
        asked = reply.split(verb, 1)[1].split(" the ")[0]
        assert asked and topic
        assert not any(
            topic.replace(" ", "_") in s.name and asked.split()[0] in s.name for s in task.tools
        ), (reply, names)


def test_the_corpus_is_the_same_for_the_same_seed() -> None:
    first = [t.messages() for t in itertools.islice(training_tasks(11), 50)]
    again = [t.messages() for t in itertools.islice(training_tasks(11), 50)]
    other = [t.messages() for t in itertools.islice(training_tasks(12), 50)]
    assert first == again
    assert first != other
    assert [f.topic for f in seen_families()] == [f.topic for f in seen_families()]
