"""A procedurally generated tool-use corpus for training and evaluating the embedded model.

* :mod:`.lexicon` -- verbs, nouns, made-up words and argument values, split train / eval;
* :mod:`.families` -- tool families (a domain noun, tools with typed parameters and results);
* :mod:`.dialogues` -- whole conversations with the calls and answers they need.

Training draws from the *seen* families and from families made up on the spot with training
words; the evaluation uses held-out phrasings, with the seen families (new argument values) or
with *unseen* families built only from held-out words.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Literal

from .dialogues import Step, Task, TaskKind, make_task
from .families import Family, make_family
from .lexicon import Words

__all__ = [
    "Step",
    "Task",
    "TaskKind",
    "evaluation_tasks",
    "seen_families",
    "training_tasks",
    "unseen_families",
]

_SEEN_SEED = 7001
_UNSEEN_SEED = 7002


def seen_families(count: int = 400) -> list[Family]:
    """The named families training uses (the same list on every machine)."""
    words = Words(random.Random(_SEEN_SEED), "train")
    return [make_family(words) for _ in range(count)]


def unseen_families(count: int = 150) -> list[Family]:
    """Families built only from held-out words: never part of any training conversation."""
    words = Words(random.Random(_UNSEEN_SEED), "eval")
    return [make_family(words) for _ in range(count)]


def training_tasks(seed: int) -> Iterator[Task]:
    """An endless, seeded stream of training conversations."""
    rng = random.Random(seed)
    pool = seen_families()
    while True:
        yield make_task(rng, "train", pool)


def evaluation_tasks(
    which: Literal["seen", "unseen"], count: int, *, seed: int = 0, kind: TaskKind | None = None
) -> list[Task]:
    """Held-out conversations: held-out phrasings and argument values, with the seen families
    (``"seen"``) or with unseen ones (``"unseen"``)."""
    rng = random.Random(f"{which}-{seed}-{kind}")
    pool = seen_families() if which == "seen" else unseen_families()
    return [
        make_task(rng, "eval", pool, phrasing="eval", kind=kind, fresh_families=False)
        for _ in range(count)
    ]
