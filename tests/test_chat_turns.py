"""``agent-runtime chat`` as a person uses it: type, read the screen, answer approvals.

Each test runs the real command in a real terminal (a tmux pane) with a test model that does
what it is told (``tests/chat_support/chat_model.py``) and real local tools that write files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from chat_support.host import APPROVAL, PROMPT, start_chat
from chat_support.terminal import TmuxTerminal


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[TmuxTerminal]:
    terminal = start_chat(tmp_path)
    yield terminal
    terminal.close()


def test_turns_stream_markdown_and_the_conversation_carries_over(
    chat: TmuxTerminal, tmp_path: Path
) -> None:
    chat.type("hello there")
    chat.wait_for(PROMPT, after=chat.mark())
    screen = chat.screen()
    # rendered as markdown: emphasis markers gone, a bulleted list
    assert "You said hello there; this is turn 1 of the conversation." in screen
    assert "*hello there*" not in screen
    assert "• second point" in screen

    mark = chat.mark()
    chat.type("and again")
    chat.wait_for(r"You said and again; this is turn 2 of", after=mark)
    chat.wait_for(PROMPT, after=mark)

    # the input history: Up brings back the last prompt
    mark = chat.mark()
    chat.key("Up")
    chat.wait_for(r"› and again\s*\Z", after=mark - 1)  # on the prompt's own line
    chat.key("C-u")

    # Esc Enter starts a new line; Enter sends both
    chat.type("line one", enter=False)
    chat.key("Escape", "Enter")
    chat.type("line two")
    chat.wait_for(r"You said line one line two; this is turn 3 of", after=mark)
    chat.wait_for(PROMPT, after=mark)

    mark = chat.mark()
    chat.type("/history")
    chat.wait_for(r"you: hello there", after=mark)
    chat.wait_for(r"you: and again", after=mark)
    chat.wait_for(r"you: line one\nline two", after=mark)

    mark = chat.mark()
    chat.type("/save talk.json")
    chat.wait_for(r"saved 6 messages to talk\.json", after=mark)
    saved = json.loads((tmp_path / "talk.json").read_text())
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"] * 3
    assert saved["messages"][2]["content"] == "and again"
    assert saved["messages"][4]["content"] == "line one\nline two"
    assert saved["model"] == "directive-test-model"

    mark = chat.mark()
    chat.type("/reset")
    chat.wait_for("conversation cleared", after=mark)
    chat.type("after the reset")
    chat.wait_for(r"You said after the reset; this is turn 1 of", after=mark)

    mark = chat.mark()
    chat.type("/model")
    chat.wait_for(r"model: directive-test-model\s+backend chat_model:make", after=mark)

    chat.type("/quit")
    assert chat.wait_exit() == 0
    chat.wait_for(r"^bye", after=mark)


def test_a_tool_call_waits_for_approval_and_shows_as_a_panel(
    chat: TmuxTerminal, tmp_path: Path
) -> None:
    mark = chat.mark()
    chat.type('call write_note {"path": "a.txt", "text": "first"}')
    chat.wait_for(r"approve write_note \(local\)", after=mark)
    chat.wait_for(APPROVAL, after=mark)
    assert not (tmp_path / "a.txt").exists()  # nothing ran before the answer
    chat.type("y")
    panel = chat.wait_for(
        r"─ write_note ─+╮\n│ arguments: \{\"path\": \"a.txt\", \"text\": \"first\"\}\s+│\n"
        r"│ result: wrote 5 characters to a.txt\s+│\n╰─+ \d+\.\d\ds ─╯",
        after=mark,
    )
    assert panel.group(0)
    chat.wait_for(r"Tool answered\. It said: wrote 5 characters to a\.txt", after=mark)
    chat.wait_for(PROMPT, after=mark)
    assert (tmp_path / "a.txt").read_text() == "first"

    # denied: the file stays as it was, the panel says why, in red
    mark = chat.mark()
    chat.type('call write_note {"path": "a.txt", "text": "second"}')
    chat.wait_for(APPROVAL, after=mark)
    chat.type("n")
    chat.wait_for(r"write_note \(denied\)", after=mark)
    chat.wait_for(r"error: The user denied this call to 'write_note'", after=mark)
    chat.wait_for(PROMPT, after=mark)
    assert (tmp_path / "a.txt").read_text() == "first"

    # always: asked once more, then never again this session
    mark = chat.mark()
    chat.type("/tools")
    chat.wait_for(r"write_note\s+│ local\s+│ asks", after=mark)
    chat.wait_for(r"read_note\s+│ local\s+│ freely", after=mark)
    chat.type('call write_note {"path": "b.txt", "text": "x"}')
    chat.wait_for(APPROVAL, after=mark)
    chat.type("a")
    chat.wait_for(PROMPT, after=mark)
    assert (tmp_path / "b.txt").read_text() == "x"
    mark = chat.mark()
    chat.type('call write_note {"path": "c.txt", "text": "y"}')
    chat.wait_for(r"wrote 1 characters to c\.txt", after=mark)
    chat.wait_for(PROMPT, after=mark)
    assert "approve write_note" not in chat.screen()[mark:]
    assert (tmp_path / "c.txt").read_text() == "y"
    chat.type("/tools")
    chat.wait_for(r"write_note\s+│ local\s+│ freely", after=mark)


def test_a_failing_tool_and_an_unknown_command_are_shown_in_red_and_the_session_goes_on(
    chat: TmuxTerminal,
) -> None:
    mark = chat.mark()
    chat.type('call read_note {"path": 5}')
    chat.wait_for(r"read_note \(validation\)", after=mark)
    chat.wait_for(r"error: Invalid arguments for tool 'read_note'", after=mark)
    chat.wait_for(r"/path: expected string, given 5", after=mark)
    chat.wait_for(PROMPT, after=mark)
    mark = chat.mark()
    chat.type("/frobnicate")
    chat.wait_for(r"unknown command /frobnicate: /help lists them", after=mark)
    chat.type("still here?")
    chat.wait_for(r"You said still here\?", after=mark)
