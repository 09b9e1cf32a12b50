"""Words and values for the procedural tool-use corpus.

Everything the model must copy (argument values, made-up nouns, tool names) comes from spaces far
too large to memorise, split between training and evaluation by a stable hash, so that copying
from the request and reading the offered tool list are the only strategies that work. The small
closed sets (verbs and their phrasings, cue words, answer frames) are what the model learns.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "REAL_NOUNS",
    "VERBS",
    "Split",
    "Verb",
    "Words",
    "in_split",
]

Split = Literal["train", "eval"]


def in_split(word: str, split: Split) -> bool:
    """Whether ``word`` belongs to ``split``: a fifth of every vocabulary (by a stable hash) is
    kept for evaluation and never appears in training data."""
    held_out = zlib.crc32(word.lower().encode("utf-8")) % 5 == 0
    return held_out if split == "eval" else not held_out


@dataclass(frozen=True)
class Verb:
    """A tool-name verb: ``name`` as it appears in tool names, how requests ask for it, and the
    third-person form descriptions use."""

    name: str
    asks: tuple[str, ...]
    describes: str


VERBS: tuple[Verb, ...] = (
    Verb("get", ("get", "fetch", "look up", "show me", "give me", "retrieve"), "Gets"),
    Verb("list", ("list", "show all", "enumerate", "give me every"), "Lists"),
    Verb("create", ("create", "add", "make", "set up"), "Creates"),
    Verb("delete", ("delete", "remove", "erase", "drop"), "Deletes"),
    Verb("update", ("update", "modify", "edit", "change"), "Updates"),
    Verb("search", ("search", "search for", "find", "look for"), "Searches"),
    Verb("send", ("send", "deliver", "dispatch", "mail"), "Sends"),
    Verb("convert", ("convert", "transform", "turn"), "Converts"),
    Verb("count", ("count", "tally", "number"), "Counts"),
    Verb("check", ("check", "verify", "validate", "inspect"), "Checks"),
    Verb("book", ("book", "reserve", "schedule"), "Books"),
    Verb("cancel", ("cancel", "call off", "abort"), "Cancels"),
    Verb("compute", ("compute", "calculate", "work out", "estimate"), "Computes"),
    Verb("start", ("start", "launch", "begin", "kick off"), "Starts"),
    Verb("stop", ("stop", "halt", "pause", "end"), "Stops"),
    Verb("export", ("export", "download", "save"), "Exports"),
)

REAL_NOUNS: tuple[str, ...] = tuple(
    """account address agenda album alarm alert appointment archive article asset badge balance
    bank basket batch bill blog board booking bookmark branch browser budget bug build bundle
    cabinet calendar camera campaign car card cart catalog category certificate channel chapter
    chart checkout city claim class client clip cluster coin comment commit company contact
    container contract coupon course credit customer dashboard database dataset deal delivery
    deployment device diagram discount dish doctor document domain donation draft driver email
    employee engine episode estimate event expense fare feed file filter flight folder font forecast
    form forum friend fund game garden gift goal grade graph group guest habit hotel image incident
    index invoice issue item job journal key label lead lesson library license link loan location
    log machine map match meal medication meeting member menu message metric milestone model module
    movie network note notebook notification offer order package page parcel partner password
    patient payment permission pet photo pipeline plan player playlist podcast policy poll
    portfolio post price printer product profile project prompt property quote receipt recipe record
    reminder report repository request reservation resource restaurant review reward room route
    rule salary sale schedule score screen script seat secret sensor server service session
    shipment shop signal skill slide song source speaker sprint station stock store story stream
    student subscription survey table tag task team template ticket timer token topic tour track
    trade train transaction trip tutorial user vacation vehicle vendor version video visit volume
    vote wallet warehouse webhook widget workflow workout zone""".split()
)

# Syllables for made-up words: pronounceable, varied, and tokenised into several pieces.
_ONSETS = (
    "b bl br c ch cl cr d dr f fl fr g gl gr h j k kl kr l m n p pl pr qu r s sh sk sl sp st str "
    "t th tr v w z zh"
).split()
_VOWELS = "a e i o u ai ea ee io oa ou y".split()
_CODAS = ("", "", "", "n", "r", "l", "s", "t", "m", "x", "k", "nd", "rt", "st", "ng", "sh")

# Whole placeholders a user might write as a value: short words of several shapes.
_TLDS = ("com", "org", "net", "io", "dev")


class Words:
    """Random words and values from one split's side of every vocabulary, from one ``rng``."""

    def __init__(self, rng: random.Random, split: Split) -> None:
        self.rng = rng
        self.split = split
        self._real = [w for w in REAL_NOUNS if in_split(w, split)]

    # -- words
    def made_up(self, syllables: int | None = None) -> str:
        """A pronounceable made-up lowercase word from this split."""
        rng = self.rng
        n = syllables if syllables is not None else rng.choice((1, 2, 2, 2, 3))
        while True:
            word = "".join(
                rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n)
            )
            if 3 <= len(word) <= 11 and in_split(word, self.split):
                return word

    def noun(self) -> str:
        """A domain noun: a real one (of this split) or a made-up one, half and half."""
        if self.rng.random() < 0.5:
            return self.rng.choice(self._real)
        return self.made_up(self.rng.choice((1, 2, 2)))

    def name(self) -> str:
        """A capitalised made-up name (a person, a city, a product)."""
        return self.made_up().capitalize()

    # -- values
    def value(self, kind: str) -> str | int | float | bool | list[str] | list[int]:
        """A random argument value of ``kind`` (see ``VALUE_KINDS``)."""
        rng = self.rng
        if kind == "word":
            return self.made_up()
        if kind == "name":
            return self.name() if rng.random() < 0.7 else f"{self.name()} {self.name()}"
        if kind == "phrase":
            return " ".join(self.made_up() for _ in range(rng.randint(2, 4)))
        if kind == "code":
            letters = "".join(
                rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(rng.randint(2, 3))
            )
            return f"{letters}-{rng.randint(10, 99999)}"
        if kind == "email":
            return f"{self.made_up()}@{self.made_up()}.{rng.choice(_TLDS)}"
        if kind == "zone":
            return f"{self.name()}/{self.name()}"
        if kind == "date":
            return (
                f"{rng.randint(1990, 2039):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            )
        if kind == "datetime":
            return f"{self.value('date')}T{self.value('time')}:{rng.randint(0, 59):02d}+00:00"
        if kind == "currency":
            return "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(3))
        if kind == "time":
            return f"{rng.randint(0, 23):02d}:{rng.choice((0, 15, 30, 45, rng.randint(0, 59))):02d}"
        if kind == "integer":
            return rng.choice(
                (rng.randint(0, 99), rng.randint(100, 9999), rng.randint(10000, 999999))
            )
        if kind == "number":
            return round(rng.uniform(-50, 5000), rng.choice((1, 2)))
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "words":
            return [self.made_up() for _ in range(rng.randint(2, 3))]
        if kind == "integers":
            return [rng.randint(1, 9999) for _ in range(rng.randint(2, 3))]
        raise ValueError(f"unknown value kind {kind!r}")


#: Every value kind with the JSON Schema of its values.
VALUE_KINDS: dict[str, dict[str, object]] = {
    "word": {"type": "string"},
    "name": {"type": "string"},
    "phrase": {"type": "string"},
    "code": {"type": "string"},
    "email": {"type": "string", "format": "email"},
    "zone": {"type": "string"},
    "date": {"type": "string", "format": "date"},
    "time": {"type": "string"},
    "datetime": {"type": "string", "format": "date-time"},
    "currency": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "words": {"type": "array", "items": {"type": "string"}},
    "integers": {"type": "array", "items": {"type": "integer"}},
}
