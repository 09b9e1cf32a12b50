"""One error tree: every error the A2A and MCP faces raise is an ``AgentRuntimeError``.

A caller that catches ``AgentRuntimeError`` (the CLI does, to print one line) sees them all, and
the older bases stay for code that caught those.
"""

from __future__ import annotations

import pytest

from agent_runtime.errors import AgentRuntimeError, ConfigError
from agent_runtime.protocols.a2a import client as a2a_client
from agent_runtime.protocols.a2a import errors as a2a_errors
from agent_runtime.protocols.a2a import store as a2a_store
from agent_runtime.protocols.mcp import auth as mcp_auth
from agent_runtime.protocols.mcp import errors as mcp_errors


def _error_classes(module: object) -> list[type[BaseException]]:
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, BaseException)
    ]


@pytest.mark.parametrize("module", [a2a_errors, mcp_errors], ids=["a2a", "mcp"])
def test_every_protocol_error_class_derives_from_agent_runtime_error(module: object) -> None:
    classes = _error_classes(module)
    assert classes
    assert [c.__name__ for c in classes if not issubclass(c, AgentRuntimeError)] == []


def test_client_errors_live_in_errors_and_keep_their_old_homes_and_bases() -> None:
    assert a2a_client.A2AClientError is a2a_errors.A2AClientError
    assert a2a_client.TaskFollowTimeout is a2a_errors.TaskFollowTimeout
    assert issubclass(a2a_errors.TaskFollowTimeout, TimeoutError)
    assert a2a_store.InvalidPageToken is a2a_errors.InvalidPageToken
    assert issubclass(a2a_errors.InvalidPageToken, ValueError)


def test_an_unusable_oauth_config_is_a_config_error_and_still_a_value_error() -> None:
    with pytest.raises(ConfigError) as caught:
        mcp_auth.oauth_config_from_dict({"grant": "password"})
    assert isinstance(caught.value, ValueError)
    assert mcp_auth.OAuthConfigError is mcp_errors.OAuthConfigError
