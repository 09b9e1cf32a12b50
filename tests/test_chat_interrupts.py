"""Ctrl-C and Ctrl-D in ``agent-runtime chat``: Ctrl-C cancels the running turn (a slow local
tool, a slow MCP tool, a model still talking) and the session answers the next prompt; a
second Ctrl-C quits, and leaving stops the MCP servers."""

from __future__ import annotations

import time
from pathlib import Path

from chat_support.host import APPROVAL, PROMPT, TEST_SERVER, start_chat, stdio
from mcp_support.helpers import alive, events, started_pids


def test_ctrl_c_cancels_the_turn_and_the_session_goes_on(tmp_path: Path) -> None:
    state = tmp_path / "server-state"
    state.mkdir()
    chat = start_chat(
        tmp_path, mcpServers={"test": stdio(TEST_SERVER, MCP_TEST_STATE_DIR=str(state))}
    )
    try:
        # a slow local tool: cancelled where it sleeps
        mark = chat.mark()
        marker = tmp_path / "nap"
        chat.type(f'call nap {{"seconds": 120, "marker": "{marker}"}}')
        chat.wait_for(r"⋯ nap +running", after=mark)
        chat.key("C-c")
        chat.wait_for(r"✗ nap cancelled", after=mark)
        chat.wait_for(r"turn cancelled", after=mark)
        chat.wait_for(PROMPT, after=mark)
        assert Path(f"{marker}.cancelled").exists()
        chat.type("are you there?")
        chat.wait_for(r"You said are you there\?; this is turn 1 of", after=mark)
        chat.wait_for(PROMPT, after=mark)

        # Ctrl-C at an approval: the turn ends, the tool never runs
        mark = chat.mark()
        chat.type('call write_note {"path": "never.txt", "text": "x"}')
        chat.wait_for(APPROVAL, after=mark)
        chat.key("C-c")
        chat.wait_for(r"turn cancelled", after=mark)
        chat.wait_for(PROMPT, after=mark)
        assert not (tmp_path / "never.txt").exists()

        # a slow MCP tool: the server is told, and records the cancellation
        mark = chat.mark()
        chat.type('call test__slow {"seconds": 120}')
        chat.wait_for(APPROVAL, after=mark)
        chat.type("y")
        chat.wait_for(r"⋯ test__slow +running", after=mark)
        deadline = time.monotonic() + 20
        while ("call", "slow") not in [(e, d) for _, e, d in events(state)]:
            assert time.monotonic() < deadline, "the slow call never reached the server"
            time.sleep(0.1)
        chat.key("C-c")
        chat.wait_for(r"turn cancelled", after=mark)
        chat.wait_for(PROMPT, after=mark)
        deadline = time.monotonic() + 20
        while ("cancelled", "slow") not in [(e, d) for _, e, d in events(state)]:
            assert time.monotonic() < deadline, "the server never saw the cancellation"
            time.sleep(0.1)

        # a model still talking: generation stops mid-stream
        mark = chat.mark()
        chat.type("talk slowly")
        chat.wait_for(r"blah blah blah", after=mark)
        chat.key("C-c")
        chat.wait_for(r"turn cancelled", after=mark)
        chat.wait_for(PROMPT, after=mark)
        settled = chat.screen()
        time.sleep(1)
        assert chat.screen() == settled  # nothing more streams in
        # the cancelled turns left nothing behind: the conversation has one exchange
        chat.type("/history")
        chat.wait_for(r"you: are you there\?", after=mark)
        assert "you: talk slowly" not in chat.screen()[mark:]

        # Ctrl-C at the prompt warns; a second one quits, stopping the server
        (pid,) = started_pids(state)
        assert alive(pid)
        mark = chat.mark()
        chat.key("C-c")
        chat.wait_for(r"\(Ctrl-C again or Ctrl-D to quit\)", after=mark)
        assert chat.exit_status() is None
        chat.key("C-c")
        assert chat.wait_exit() == 0
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(pid)
    finally:
        chat.close()
