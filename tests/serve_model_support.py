"""Start ``agent-runtime serve-model`` as a real process and find its URL (shared by the
serve-model tests and the example's test)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from support_processes import start_python, stop_process


def served_url(proc: subprocess.Popen[str]) -> str:
    """The API URL from the command's first line (``serving NAME at URL``)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("serving "):
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"serve-model did not start: {line!r} {err[-2000:]}")
    return line.split(" at ")[-1].strip()


@contextmanager
def serve_model(*args: str) -> Iterator[str]:
    """``agent-runtime serve-model --port 0 *args``; yields the API base URL (``.../v1``)."""
    proc = start_python("-m", "agent_runtime.cli", "serve-model", "--port", "0", *args)
    try:
        yield served_url(proc)
    finally:
        stop_process(proc, timeout_s=15)
