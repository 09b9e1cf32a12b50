"""``/model`` in ``agent-runtime chat``: what answers and with which settings, and ``/model
NAME`` switching to another model of the config's ``models`` map mid-conversation.

The real command runs in a tmux pane; the config's models are test models of
``tests/chat_support/chat_model.py`` under their own names, each answering ``who are you`` with
its name, the temperature it was sent and the turn's number.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from chat_support.host import HERE, PROMPT, start_chat
from chat_support.terminal import TmuxTerminal

MODELS = {
    "beta": {"backend": "chat_model:make", "name": "beta-model", "settings": {"temperature": 0.75}},
    "broken": {"backend": "no_such_module_here:make"},
}


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[TmuxTerminal]:
    terminal = start_chat(
        tmp_path,
        model={"backend": "chat_model:make", "name": "alpha", "settings": {"temperature": 0.25}},
        models=MODELS,
    )
    yield terminal
    terminal.close()


def ask_who(chat: TmuxTerminal, name: str, temperature: float, turn: int) -> None:
    mark = chat.mark()
    chat.type("who are you")
    chat.wait_for(
        rf"I am {name} at temperature {temperature}; this is turn {turn} of\s+the\s+conversation",
        after=mark,
    )
    chat.wait_for(PROMPT, after=mark)


def test_model_shows_the_model_and_switches_keeping_the_conversation(
    chat: TmuxTerminal, tmp_path: Path
) -> None:
    ask_who(chat, "alpha", 0.25, 1)

    mark = chat.mark()
    chat.type("/model")
    chat.wait_for(r"model: alpha\s+backend chat_model:make\s+\(config: default\)", after=mark)
    chat.wait_for(r'options: \{"name": "alpha"\}', after=mark)
    chat.wait_for(r'settings: \{"temperature": 0\.25\}', after=mark)
    chat.wait_for(r"models: default, beta, broken\s+\(/model NAME switches\)", after=mark)
    chat.wait_for(PROMPT, after=mark)

    mark = chat.mark()
    chat.type("/model beta")
    chat.wait_for(r"switched to beta; the conversation carries over", after=mark)
    chat.wait_for(r"model: beta-model\s+backend chat_model:make\s+\(config: beta\)", after=mark)
    chat.wait_for(r'settings: \{"temperature": 0\.75\}', after=mark)
    chat.wait_for(PROMPT, after=mark)
    ask_who(chat, "beta-model", 0.75, 2)  # the new model sees the earlier turn

    # an unknown name and a model that cannot be built: said in red, the model in use stays
    mark = chat.mark()
    chat.type("/model nope")
    chat.wait_for(
        r"cannot switch model: no model named 'nope' in the config; its\s+models:\s+default,"
        r"\s+beta,\s+broken",
        after=mark,
    )
    chat.wait_for(PROMPT, after=mark)
    mark = chat.mark()
    chat.type("/model broken")
    chat.wait_for(r"cannot switch model: .*no_such_module_here", after=mark)
    chat.wait_for(PROMPT, after=mark)
    ask_who(chat, "beta-model", 0.75, 3)

    mark = chat.mark()
    chat.type("/model default")
    chat.wait_for(r"model: alpha\s+backend chat_model:make\s+\(config: default\)", after=mark)
    chat.wait_for(PROMPT, after=mark)
    ask_who(chat, "alpha", 0.25, 4)

    mark = chat.mark()
    chat.type("/history")
    chat.wait_for(r"assistant: I am beta-model at temperature 0\.75; this is turn 3", after=mark)
    chat.wait_for(PROMPT, after=mark)

    mark = chat.mark()
    chat.type("/help")
    chat.wait_for(r"/model \[NAME\]\s+which model answers", after=mark)
    chat.wait_for(r"conversation\s+carries\s+over\)", after=mark)
    chat.wait_for(PROMPT, after=mark)

    mark = chat.mark()
    chat.type("/save talk.json")
    chat.wait_for(r"saved 8 messages to talk\.json", after=mark)
    chat.type("/quit")
    assert chat.wait_exit() == 0


def test_a_models_map_that_is_not_one_stops_the_chat_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "agent.json").write_text(
        '{"model": {"backend": "chat_model:make"}, "models": {"beta": "chat_model:make"}}'
    )
    terminal = TmuxTerminal(
        tmp_path / "tmux.sock",
        [sys.executable, "-m", "agent_runtime.cli", "chat", "--config", "agent.json"],
        tmp_path,
        {"PYTHONPATH": str(HERE), "XDG_STATE_HOME": str(tmp_path / "state")},
    )
    try:
        assert terminal.wait_exit(timeout_s=90) != 0
        terminal.wait_for(r"models\.beta: a model block must be an object")
    finally:
        terminal.close()
