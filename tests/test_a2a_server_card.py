"""The public agent card: content, both interfaces, caching headers."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import httpx
import pytest
from a2a_support.agents import echo_agent
from a2a_support.fixtures import node
from a2a_support.net import running

from agent_runtime.protocols.a2a.card import AgentCardConfig
from agent_runtime.protocols.a2a.push import PushConfig
from agent_runtime.protocols.a2a.server import create_a2a_app
from agent_runtime.protocols.a2a.store import InMemoryTaskStore
from agent_runtime.protocols.a2a.types import AgentCard, AgentSkill

pytestmark = pytest.mark.anyio


async def test_card_describes_the_agent_and_both_bindings() -> None:
    skill = AgentSkill(id="sum", name="Sum", description="Adds", tags=["math"], examples=["1+1"])
    config = AgentCardConfig(version="2.3.4", skills=[skill], name="Summer")
    async with node(card=config) as (base, client):
        r = await client.get(base + "/.well-known/agent-card.json")
        card = r.json()
        assert card["name"] == "Summer"
        assert card["description"] == "Echoes what it is told"
        assert card["version"] == "2.3.4"
        assert card["skills"] == [skill.to_wire()]
        assert card["supportedInterfaces"] == [
            {"url": base + "/a2a/jsonrpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
            {"url": base + "/a2a/rest", "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"},
        ]
        assert card["capabilities"] == {
            "streaming": True,
            "pushNotifications": True,
            "extendedAgentCard": False,
        }
        assert card["defaultInputModes"] and card["defaultOutputModes"] == ["text/plain"]
        assert AgentCard.from_wire(card).to_wire() == card


async def test_card_has_etag_and_cache_control_and_answers_304() -> None:
    async with node(card=AgentCardConfig(cache_max_age=120)) as (base, client):
        url = base + "/.well-known/agent-card.json"
        r = await client.get(url)
        etag = r.headers["etag"]
        assert r.headers["cache-control"] == "public, max-age=120"
        again = await client.get(url)
        assert again.headers["etag"] == etag
        cached = await client.get(url, headers={"If-None-Match": etag})
        assert cached.status_code == 304 and cached.content == b""
        assert (await client.get(url, headers={"If-None-Match": f"W/{etag}"})).status_code == 304
        stale = await client.get(url, headers={"If-None-Match": '"other"'})
        assert stale.status_code == 200 and stale.json()["name"] == "echo"


async def test_base_url_and_options_shape_the_card() -> None:
    async with node(
        base_url="https://agents.example.com/",
        push=PushConfig(enabled=False),
        card=AgentCardConfig(streaming=False, preferred_binding="HTTP+JSON"),
    ) as (base, client):
        card = (await client.get(base + "/.well-known/agent-card.json")).json()
        assert [i["url"] for i in card["supportedInterfaces"]] == [
            "https://agents.example.com/a2a/rest",
            "https://agents.example.com/a2a/jsonrpc",
        ]
        assert card["capabilities"]["pushNotifications"] is False
        assert card["capabilities"]["streaming"] is False
        # Declared off means refused (spec 3.3.4).
        r = await client.post(
            base + "/a2a/jsonrpc",
            headers={"A2A-Version": "1.0"},
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "SendStreamingMessage",
                "params": {
                    "message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]}
                },
            },
        )
        assert r.json()["error"]["code"] == -32004
        r = await client.post(
            base + "/a2a/jsonrpc",
            headers={"A2A-Version": "1.0"},
            json={
                "jsonrpc": "2.0",
                "id": 2,
                "method": "ListTaskPushNotificationConfigs",
                "params": {"taskId": "x"},
            },
        )
        assert r.json()["error"]["code"] == -32003


async def test_listing_the_grpc_binding_later_changes_the_cards_etag_and_last_modified() -> None:
    """``serve.py`` sets ``grpc_url`` once the gRPC server listens; a card served before then
    must not stay cached, and its validators must not call the old card current."""
    app = create_a2a_app(echo_agent(), store=InMemoryTaskStore())
    async with running(app) as base, httpx.AsyncClient(timeout=30) as client:
        url = base + "/.well-known/agent-card.json"
        before = await client.get(url)
        old_etag, old_date = before.headers["etag"], before.headers["last-modified"]
        assert "GRPC" not in [i["protocolBinding"] for i in before.json()["supportedInterfaces"]]

        app.state.a2a.grpc_url = "127.0.0.1:50051"
        after = await client.get(url)
        interfaces = after.json()["supportedInterfaces"]
        assert {"url": "127.0.0.1:50051", "protocolBinding": "GRPC", "protocolVersion": "1.0"} in (
            interfaces
        )
        new_etag, new_date = after.headers["etag"], after.headers["last-modified"]
        assert new_etag != old_etag
        assert parsedate_to_datetime(new_date) > parsedate_to_datetime(old_date)
        # A client revalidating the old card gets the new one, by either validator.
        stale = await client.get(url, headers={"If-None-Match": old_etag})
        assert stale.status_code == 200 and stale.json()["supportedInterfaces"] == interfaces
        stale = await client.get(url, headers={"If-Modified-Since": old_date})
        assert stale.status_code == 200 and stale.headers["etag"] == new_etag
        fresh = await client.get(url, headers={"If-Modified-Since": new_date})
        assert fresh.status_code == 304

        # Setting the same URL again changes nothing a client holds.
        app.state.a2a.grpc_url = "127.0.0.1:50051"
        same = await client.get(url, headers={"If-None-Match": new_etag})
        assert same.status_code == 304 and same.headers["last-modified"] == new_date
