"""Every name the A2A package exports lazily imports, and is the object of the module it names."""

from __future__ import annotations

import importlib

import pytest

import agent_runtime.protocols.a2a as a2a


@pytest.mark.parametrize("name", sorted(a2a._EXPORTS))
def test_every_lazy_export_imports(name: str) -> None:
    value = getattr(a2a, name)
    module = importlib.import_module(f"agent_runtime.protocols.a2a.{a2a._EXPORTS[name]}")
    assert getattr(module, name) is value


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        a2a.NoSuchThing  # noqa: B018
