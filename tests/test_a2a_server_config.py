"""A node built from a config dict (what ``agent-runtime serve --a2a --config`` reads)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from a2a_support.agents import echo_agent
from a2a_support.bindings import JsonRpcBinding
from a2a_support.net import running, text_message

from agent_runtime.protocols.a2a.serve import app_from_config
from agent_runtime.protocols.a2a.server import DEFAULT_BODY_TIMEOUT_S
from agent_runtime.protocols.a2a.sqlite_store import SQLiteTaskStore

pytestmark = pytest.mark.anyio


async def test_config_keys_shape_the_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("A2A_TEST_TOKEN", "from-env")
    config = {
        "a2a": {
            "name": "Configured",
            "version": "3.0.0",
            "skills": [{"id": "s", "name": "S", "description": "does s", "tags": ["t"]}],
            "extendedSkills": [{"id": "x", "name": "X", "description": "hidden", "tags": []}],
            "baseUrl": "https://node.example.com",
            "store": {"kind": "sqlite", "path": str(tmp_path / "db" / "tasks.sqlite3")},
            "auth": {"bearerTokens": {"env:A2A_TEST_TOKEN": "ops"}, "apiKeys": {"k1": "svc"}},
            "push": {"enabled": False},
            "maxBodyBytes": 4096,
        }
    }
    app = app_from_config(config, echo_agent())
    assert isinstance(app.state.handler.store, SQLiteTaskStore)
    async with running(app) as base, httpx.AsyncClient() as client:
        card = (await client.get(base + "/.well-known/agent-card.json")).json()
        assert card["name"] == "Configured" and card["version"] == "3.0.0"
        assert [s["id"] for s in card["skills"]] == ["s"]
        assert card["supportedInterfaces"][0]["url"] == "https://node.example.com/a2a/jsonrpc"
        assert card["capabilities"]["pushNotifications"] is False
        assert set(card["securitySchemes"]) == {"bearer", "apiKey"}
        ops = JsonRpcBinding(client, base, {"Authorization": "Bearer from-env"})
        svc = JsonRpcBinding(client, base, {"X-API-Key": "k1"})
        task = (await ops.send({"message": text_message("hi")})).unwrap()["task"]
        assert (await svc.get(task["id"])).reason == "TASK_NOT_FOUND"
        assert [s["id"] for s in (await svc.extended_card()).unwrap()["skills"]] == ["s", "x"]
        literal = JsonRpcBinding(client, base, {"Authorization": "Bearer env:A2A_TEST_TOKEN"})
        assert (await literal.list()).reason == "UNAUTHENTICATED"
        big = await ops.send({"message": text_message("x" * 5000)})
        assert big.http_status == 413
    assert (tmp_path / "db" / "tasks.sqlite3").exists()


def test_a_missing_env_secret_is_a_clear_error() -> None:
    config = {
        "auth": {"bearer_tokens": {"env:A2A_SURELY_UNSET_VAR": "p"}},
        "store": {"kind": "memory"},
    }
    with pytest.raises(KeyError, match="A2A_SURELY_UNSET_VAR"):
        app_from_config(config, echo_agent())


def test_body_timeout_comes_from_the_config_and_must_be_positive() -> None:
    app = app_from_config({"store": {"kind": "memory"}, "body_timeout_s": 2.5}, echo_agent())
    assert app.state.a2a.body_timeout_s == 2.5
    default = app_from_config({"store": {"kind": "memory"}}, echo_agent())
    assert default.state.a2a.body_timeout_s == DEFAULT_BODY_TIMEOUT_S
    for bad in (0, -1):
        with pytest.raises(ValueError, match="body_timeout_s must be positive"):
            app_from_config({"store": {"kind": "memory"}, "bodyTimeoutS": bad}, echo_agent())
