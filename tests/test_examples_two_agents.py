"""The two-agents example as its own command: ``python examples/two_agents.py QUESTION``
starts agent B as an A2A node in a second process, agent A delegates to it over loopback, and
B's answer (made with B's own tool) reaches A's output; B is then stopped cleanly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "two_agents.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_agent_a_delegates_to_agent_b_over_a2a_and_gets_its_answer() -> None:
    done = _run("How many crates of pears are left?")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"agent B \(warehouse\) serves A2A at http://127\.0\.0\.1:\d+", lines[0])
    assert lines[1:] == [
        "user -> A: How many crates of pears are left?",
        'A -> B (ask_warehouse): {"message": "How many crates of pears are left?"}',
        "B -> A: 7 crates of pears are left (stock_level says 7).",
        "A -> user: The warehouse agent says: 7 crates of pears are left (stock_level says 7).",
        "agent B stopped (exit status 0)",
    ]


def test_b_answers_what_it_was_asked_not_a_fixed_text() -> None:
    done = _run("Any plums today?")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "B -> A: 0 crates of plums are left (stock_level says 0)." in done.stdout
    assert "A -> user: The warehouse agent says: 0 crates of plums" in done.stdout
