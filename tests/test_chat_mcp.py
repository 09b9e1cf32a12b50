"""``agent-runtime chat`` with real MCP servers (stdio subprocesses on the official SDK): a
progress bar while a tool reports progress, an elicitation form whose answers are checked
against the requested schema, a sampling request the person approves or denies, ``/servers``
with a server that failed to start (and its stderr), and every server gone after Ctrl-D."""

from __future__ import annotations

import time
from pathlib import Path

from chat_support.host import APPROVAL, GATE_SERVER, PROMPT, TEST_SERVER, start_chat, stdio
from mcp_support.helpers import alive


def test_progress_forms_sampling_servers_and_a_clean_exit(tmp_path: Path) -> None:
    gate = tmp_path / "gate.open"
    chat = start_chat(
        tmp_path,
        mcpServers={
            "gate": stdio(GATE_SERVER, GATE_PID_FILE=str(tmp_path / "gate.pid")),
            "test": {**stdio(TEST_SERVER), "protocol": "2025-11-25"},
            "broken": stdio(TEST_SERVER, MCP_TEST_FAIL_AT_START="boom: no API key set"),
        },
    )
    try:
        chat.wait_for(r"1 MCP server\(s\) failed \(/servers\)")

        # progress: the bar shows while the tool waits, the panel when it is done
        mark = chat.mark()
        chat.type(f'call gate__build {{"steps": 4, "gate": "{gate}"}}')
        chat.wait_for(r"⋯ gate__build ━+\S* +3/4 step 3", after=mark)
        gate.write_text("open")
        chat.wait_for(r"result: built in 4 steps", after=mark)
        chat.wait_for(PROMPT, after=mark)

        # elicitation: a bad answer is refused in place, the form's answer reaches the server
        mark = chat.mark()
        chat.type('call test__confirm_action {"action": "deploy"}')
        chat.wait_for(APPROVAL, after=mark)
        chat.type("y")
        chat.wait_for(r"May I deploy\?", after=mark)
        chat.wait_for(r"Confirm \[boolean\]:\s*\Z", after=mark)
        chat.type("maybe")
        chat.wait_for(r"answer yes or no", after=mark)
        chat.key("C-u")
        chat.type("yes")
        chat.wait_for(r"Reason \[string, empty to skip\]:\s*\Z", after=mark)
        chat.type("ship it")
        chat.wait_for(r"send\? \[y\] send, \[n\] decline:\s*\Z", after=mark)
        chat.type("y")
        chat.wait_for(r"result: confirmed=True reason=ship it", after=mark)
        chat.wait_for(PROMPT, after=mark)

        # sampling: shown to the person first; a yes lets the model answer, a no refuses
        mark = chat.mark()
        chat.type('call test__ask_model {"question": "Capital of France?"}')
        chat.wait_for(APPROVAL, after=mark)
        chat.type("a")
        chat.wait_for(r"MCP server test asks the model", after=mark)
        chat.wait_for(r"user: Capital of France\?", after=mark)
        chat.wait_for(r"let the model answer\? \[y/n\]:\s*\Z", after=mark)
        chat.type("y")
        chat.wait_for(r"result: model said: # Reply 1", after=mark)
        chat.wait_for(PROMPT, after=mark)
        mark = chat.mark()
        chat.type('call test__ask_model {"question": "Secret?"}')
        chat.wait_for(r"let the model answer\? \[y/n\]:\s*\Z", after=mark)
        chat.type("n")
        chat.wait_for(r"sampling request denied", after=mark)
        chat.wait_for(r"test__ask_model \(tool_error\)", after=mark)
        chat.wait_for(PROMPT, after=mark)

        # /servers: who is up, who failed and what it wrote to stderr
        mark = chat.mark()
        chat.type("/servers")
        chat.wait_for(r"^gate: connected", after=mark)
        chat.wait_for(r"^ +gate server: warming up the build cache", after=mark)
        chat.wait_for(r"^test: connected  agent-runtime-test-server 1\.0\.0", after=mark)
        chat.wait_for(r"^broken: failed\n(  .*\n)*  boom: no API key set", after=mark)

        # Ctrl-D: the session ends and takes its servers with it
        pid = int((tmp_path / "gate.pid").read_text())
        assert alive(pid)
        chat.key("C-d")
        assert chat.wait_exit() == 0
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(pid)
    finally:
        chat.close()
