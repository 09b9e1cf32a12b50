"""A real terminal for the chat tests: the program runs in a tmux pane; tests type into it and
read the screen (what tmux shows, scrollback included), as a person would."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

WIDTH, HEIGHT = 140, 45


class TmuxTerminal:
    """One tmux server (its own socket) with one pane running ``command``."""

    def __init__(self, socket: Path, command: list[str], cwd: Path, env: Mapping[str, str]) -> None:
        if shutil.which("tmux") is None:
            raise RuntimeError("the chat tests need tmux (Debian: apt-get install tmux)")
        self.socket = socket
        self.cwd = cwd
        line = " ".join(
            [
                "env",
                "-u",
                "COLUMNS",
                "-u",
                "LINES",
                *(shlex.quote(f"{k}={v}") for k, v in env.items()),
                *map(shlex.quote, command),
            ]
        )
        self._tmux(
            "new-session",
            "-d",
            "-s",
            "chat",
            "-x",
            str(WIDTH),
            "-y",
            str(HEIGHT),
            "-c",
            str(cwd),
            line,
        )
        self._tmux("set-option", "-t", "chat", "remain-on-exit", "on")
        self._tmux("set-option", "-t", "chat", "history-limit", "5000")

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            raise RuntimeError(f"tmux {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def type(self, text: str, enter: bool = True) -> None:
        """Type ``text`` (literally) and press Enter."""
        self._tmux("send-keys", "-t", "chat", "-l", text)
        if enter:
            self.key("Enter")

    def key(self, *keys: str) -> None:
        """Press keys by tmux name: ``C-c``, ``C-d``, ``Enter``, ``Escape``, ``Up``."""
        self._tmux("send-keys", "-t", "chat", *keys)

    def screen(self) -> str:
        """Everything the pane shows and has scrolled past, joined lines unwrapped."""
        return self._tmux("capture-pane", "-p", "-J", "-t", "chat", "-S", "-5000")

    def wait_for(self, pattern: str, timeout_s: float = 60, after: int = 0) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) shows on the screen at or after offset ``after``."""
        deadline = time.monotonic() + timeout_s
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            found = re.compile(pattern, re.M).search(text, after)
            if found:
                return found
            if self.exit_status() is not None:
                text = self.screen()
                found = re.compile(pattern, re.M).search(text, after)
                if found:
                    return found
                break
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} did not show; the screen:\n{text}")

    def mark(self) -> int:
        """An offset into the screen text: ``wait_for(..., after=mark)`` looks only past it."""
        return len(self.screen().rstrip("\n"))

    def exit_status(self) -> int | None:
        """The program's exit status once it has ended, else ``None``."""
        out = self._tmux("display-message", "-p", "-t", "chat", "#{pane_dead} #{pane_dead_status}")
        dead, _, status = out.strip().partition(" ")
        return int(status or 0) if dead == "1" else None

    def wait_exit(self, timeout_s: float = 30) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.exit_status()
            if status is not None:
                return status
            time.sleep(0.1)
        raise AssertionError(f"the program did not exit; the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(
            ["tmux", "-S", str(self.socket), "kill-server"], capture_output=True, timeout=30
        )
