"""``a2aPeers`` config entries become A2APeerToolsets (what the CLI's config loader calls)."""

from __future__ import annotations

import pytest
from a2a_interop_support.echo_model import EchoModel
from a2a_interop_support.processes import serve_app

from agent_runtime.agent import Agent
from agent_runtime.errors import ConfigError
from agent_runtime.protocols.a2a.auth import A2AAuthConfig
from agent_runtime.protocols.a2a.peer import peers_from_config
from agent_runtime.protocols.a2a.server import create_a2a_app
from agent_runtime.protocols.a2a.store import InMemoryTaskStore
from agent_runtime.toolset import ToolContext


def test_a_url_string_is_enough() -> None:
    (peer,) = peers_from_config({"researcher": "http://127.0.0.1:9/"})
    assert peer.name == "researcher"
    assert peer.client.card_url == "http://127.0.0.1:9/.well-known/agent-card.json"


def test_unknown_keys_and_bad_urls_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="a2aPeers.x: unknown keys \\['tokn'\\]"):
        peers_from_config({"x": {"url": "http://h", "tokn": "t"}})
    with pytest.raises(ConfigError, match="a2aPeers.y.url"):
        peers_from_config({"y": {"toolName": "ask"}})
    with pytest.raises(ConfigError, match="a2aPeers.z"):
        peers_from_config({"z": 42})
    with pytest.raises(ConfigError, match="NO_SUCH_VAR_FOR_TEST"):
        peers_from_config({"w": {"url": "http://h", "bearerToken": "env:NO_SUCH_VAR_FOR_TEST"}})


@pytest.mark.anyio
async def test_configured_peer_with_env_credentials_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PEER_TOKEN_FOR_TEST", "tok-7")
    agent = Agent(EchoModel(), name="Echo Agent", description="Echoes text back")
    auth = A2AAuthConfig(bearer_tokens={"tok-7": "caller"})
    app = create_a2a_app(agent, store=InMemoryTaskStore(), auth=auth)
    async with serve_app(app) as url:
        (peer,) = peers_from_config(
            {
                "echo": {
                    "url": url,
                    "toolName": "echo_tool",
                    "bearerToken": "env:PEER_TOKEN_FOR_TEST",
                    "timeoutS": 20,
                    "maxConcurrency": 2,
                    "bindings": ["HTTP+JSON"],
                }
            }
        )
        async with peer:
            (spec,) = await peer.list_tools()
            assert spec.name == "echo_tool"
            result = await peer.call_tool("echo_tool", {"message": "configured"}, ToolContext())
            assert await peer.client.binding() == "HTTP+JSON"
    assert not result.is_error
    assert result.text_content == "echo: configured"
