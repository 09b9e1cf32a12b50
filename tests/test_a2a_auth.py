"""Bearer tokens and API keys: declared in the card, enforced on every method, tasks scoped to
the principal that created them."""

from __future__ import annotations

import pytest
from a2a_support.bindings import BINDINGS
from a2a_support.fixtures import node
from a2a_support.net import V1, text_message

from agent_runtime.protocols.a2a.auth import A2AAuthConfig
from agent_runtime.protocols.a2a.card import AgentCardConfig
from agent_runtime.protocols.a2a.types import AgentCard, AgentSkill

pytestmark = pytest.mark.anyio

AUTH = A2AAuthConfig(
    bearer_tokens={"tok-alice": "alice", "tok-bob": "bob"},
    api_keys={"key-carol": "carol"},
)
SECRET_SKILL = AgentSkill(id="secret", name="Secret", description="Hidden", tags=["x"])


async def test_card_declares_both_schemes_and_stays_public() -> None:
    async with node(auth=AUTH) as (base, client):
        r = await client.get(base + "/.well-known/agent-card.json")
        assert r.status_code == 200
        card = r.json()
        assert card["securitySchemes"]["bearer"] == {
            "httpAuthSecurityScheme": {
                "description": "Authorization: Bearer <token>",
                "scheme": "Bearer",
            }
        }
        assert card["securitySchemes"]["apiKey"]["apiKeySecurityScheme"]["name"] == "X-API-Key"
        assert card["securitySchemes"]["apiKey"]["apiKeySecurityScheme"]["location"] == "header"
        assert card["securityRequirements"] == [
            {"schemes": {"bearer": {}}},
            {"schemes": {"apiKey": {}}},
        ]
        assert card["capabilities"]["extendedAgentCard"] is True
        AgentCard.from_wire(card)


@pytest.mark.parametrize("binding", sorted(BINDINGS))
async def test_every_method_refuses_missing_or_wrong_credentials(binding: str) -> None:
    async with node(auth=AUTH) as (base, client):
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"X-API-Key": "nope"},
            {"Authorization": "Basic dG9rLWFsaWNl"},
        ):
            api = BINDINGS[binding](client, base, headers)
            outcomes = [
                await api.send({"message": text_message("hi")}),
                await api.get("t"),
                await api.list(),
                await api.cancel("t"),
                (await api.subscribe("t"))[0],
                await api.push_create("t", {"url": "https://example.com/h"}),
                await api.push_get("t", "c"),
                await api.push_list("t"),
                await api.push_delete("t", "c"),
                await api.extended_card(),
            ]
            for outcome in outcomes:
                assert outcome.reason == "UNAUTHENTICATED", (headers, outcome)
        # Over HTTP it is a 401 with a challenge.
        r = await client.post(
            base + "/a2a/jsonrpc",
            headers=V1,
            json={"jsonrpc": "2.0", "id": 1, "method": "ListTasks"},
        )
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("binding", sorted(BINDINGS))
async def test_tasks_are_visible_only_to_their_creator(binding: str) -> None:
    async with node(auth=AUTH) as (base, client):
        alice = BINDINGS[binding](client, base, {"Authorization": "Bearer tok-alice"})
        bob = BINDINGS[binding](client, base, {"Authorization": "Bearer tok-bob"})
        carol = BINDINGS[binding](client, base, {"X-API-Key": "key-carol"})
        task = (await alice.send({"message": text_message("ask:mine?")})).unwrap()["task"]
        await carol.send({"message": text_message("carol's")})
        assert (await alice.get(task["id"])).unwrap()["id"] == task["id"]
        for other in (bob, carol):
            assert (await other.get(task["id"])).reason == "TASK_NOT_FOUND"
            assert (await other.cancel(task["id"])).reason == "TASK_NOT_FOUND"
            assert (await other.subscribe(task["id"]))[0].reason == "TASK_NOT_FOUND"
            assert (await other.push_list(task["id"])).reason == "TASK_NOT_FOUND"
            follow = text_message("hijack", taskId=task["id"])
            assert (await other.send({"message": follow})).reason == "TASK_NOT_FOUND"
        assert [t["id"] for t in (await alice.list()).unwrap()["tasks"]] == [task["id"]]
        assert (await bob.list()).unwrap()["tasks"] == []
        assert (await carol.list()).unwrap()["totalSize"] == 1
        # Still waiting for alice, untouched by the others.
        assert (await alice.get(task["id"])).unwrap()["status"]["state"] == (
            "TASK_STATE_INPUT_REQUIRED"
        )


@pytest.mark.parametrize("binding", sorted(BINDINGS))
async def test_extended_card_adds_skills_for_authenticated_callers(binding: str) -> None:
    config = AgentCardConfig(extended_skills=[SECRET_SKILL])
    async with node(auth=AUTH, card=config) as (base, client):
        public = (await client.get(base + "/.well-known/agent-card.json")).json()
        assert "secret" not in [s["id"] for s in public["skills"]]
        api = BINDINGS[binding](client, base, {"Authorization": "Bearer tok-bob"})
        extended = (await api.extended_card()).unwrap()
        assert [s["id"] for s in extended["skills"]] == ["echo", "secret"]
        AgentCard.from_wire(extended)


async def test_without_auth_every_caller_shares_the_anonymous_principal() -> None:
    async with node() as (base, client):
        api = BINDINGS["jsonrpc"](client, base, {"Authorization": "Bearer anything"})
        task = (await api.send({"message": text_message("x")})).unwrap()["task"]
        other = BINDINGS["rest"](client, base)
        assert (await other.get(task["id"])).unwrap()["id"] == task["id"]
        card = (await client.get(base + "/.well-known/agent-card.json")).json()
        assert "securitySchemes" not in card
        assert card["capabilities"]["extendedAgentCard"] is False


def test_credentials_are_matched_exactly() -> None:
    from agent_runtime.protocols.a2a.errors import UnauthenticatedError

    assert AUTH.authenticate({"authorization": "Bearer tok-alice"}) == "alice"
    assert AUTH.authenticate({"authorization": "bearer tok-bob"}) == "bob"
    assert AUTH.authenticate({"x-api-key": "key-carol"}) == "carol"
    for headers in (
        {"authorization": "Bearer tok-alic"},
        {"authorization": "Bearer tok-alice2"},
        {"x-api-key": "tok-alice"},
        {},
    ):
        with pytest.raises(UnauthenticatedError):
            AUTH.authenticate(headers)
    assert A2AAuthConfig().authenticate({}) == ""
