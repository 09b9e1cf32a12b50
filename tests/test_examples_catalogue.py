"""The catalogue example as its own command: ``python examples/catalogue_tools.py`` makes a
tool of each operation in ``examples/catalogue.json``, serves the catalogue over HTTP on
loopback, and runs an agent that calls two operations; calls with bad arguments are rejected
by the dispatcher, and the server's log shows they never reached it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_catalogue_is_openapi_shaped() -> None:
    catalogue = json.loads((EXAMPLES / "catalogue.json").read_text(encoding="utf-8"))
    operations = {
        op["operationId"]: (method, path, op)
        for path, item in catalogue["paths"].items()
        for method, op in item.items()
    }
    assert set(operations) == {"searchBooks", "getBook", "borrowBook"}
    assert operations["borrowBook"][0] == "post"
    assert "requestBody" in operations["borrowBook"][2]
    assert {p["in"] for _, _, op in operations.values() for p in op.get("parameters", [])} == {
        "path",
        "query",
    }


def test_the_agent_calls_two_operations_over_http_and_bad_calls_send_nothing() -> None:
    before = date.today()
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "catalogue_tools.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"catalogue served at http://127\.0\.0\.1:\d+", lines[0])
    assert lines[1] == "tools: searchBooks, getBook, borrowBook"
    calls = [line for line in lines if line.startswith("call ")]
    assert len(calls) == 4
    assert calls[0].startswith('call searchBooks {"author": "Le Guin", "limit": 2} -> ok: ')
    found = json.loads(calls[0].split(" -> ok: ", 1)[1])
    assert [book["title"] for book in found["books"]] == [
        "The Left Hand of Darkness",
        "The Dispossessed",
    ]
    assert calls[1].startswith('call getBook {"isbn": "0-441-47812-3"} -> validation: ')
    assert "/isbn: expected string matching the pattern" in calls[1]
    assert calls[2].startswith("call borrowBook ") and " -> validation: " in calls[2]
    assert "/body/days: expected integer <= 28, given 42" in calls[2]
    assert " -> ok: " in calls[3]
    loan = json.loads(calls[3].split(" -> ok: ", 1)[1])
    assert loan == {
        "loan_id": 1,
        "isbn": "9780441478125",
        "title": "The Left Hand of Darkness",
        "member_id": 7,
        "due": loan["due"],
    }
    # 28 days from the day the example ran (the run may cross midnight).
    assert loan["due"] in {(day + timedelta(days=28)).isoformat() for day in (before, date.today())}
    assert (
        f"answer: Borrowed 'The Left Hand of Darkness' for member 7, due back {loan['due']}."
        in (lines)
    )
    # Only the two valid operations reached the server: the rejected calls sent no request.
    log = lines[lines.index("HTTP requests the server received (2):") + 1 :]
    assert log == ["  GET /books?author=Le+Guin&limit=2 -> 200", "  POST /loans -> 201"]
