"""The models a chat session can switch between with ``/model NAME``.

The config's ``model`` block is the model a session starts with, listed as ``default``. An
optional top-level ``"models": {"NAME": {...}}`` map names others, each written as a ``model``
block is (``backend``, its options, ``settings``); only the chat reads it. A model is built the
first time it is chosen (loading a local checkpoint can take a while, so it happens on a worker
thread) and kept for the rest of the session, so switching back is immediate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import ValidationError

from agent_runtime.backend import ModelBackend, ModelSettings
from agent_runtime.config import ModelConfig, RuntimeConfig, build_model, build_settings
from agent_runtime.errors import ConfigError

__all__ = ["DEFAULT_MODEL", "ChatModels", "LoadedModel"]

DEFAULT_MODEL = "default"
"""The name the config's own ``model`` block goes by."""


@dataclass(frozen=True)
class LoadedModel:
    """A built model, with the settings its block gives every request."""

    name: str
    spec: ModelConfig
    backend: ModelBackend
    settings: ModelSettings

    @property
    def backend_kind(self) -> str:
        return self.spec.backend or "embedded (the default)"

    @property
    def options(self) -> dict[str, Any]:
        """The block's backend options (``path``, ``base_url`` ...), settings left out."""
        return dict(self.spec.model_extra or {})


def _config_with(config: RuntimeConfig, spec: ModelConfig) -> RuntimeConfig:
    return config.model_copy(update={"model": spec})


def _read_specs(config: RuntimeConfig) -> dict[str, ModelConfig]:
    specs = {DEFAULT_MODEL: config.model}
    raw: Any = (config.model_extra or {}).get("models", {})
    if not isinstance(raw, Mapping):
        raise ConfigError('"models" must be an object mapping names to model blocks')
    for name, block in raw.items():
        if name == DEFAULT_MODEL:
            raise ConfigError(
                f'models.{name}: "{DEFAULT_MODEL}" is the config\'s own "model"; pick another name'
            )
        if not isinstance(block, Mapping):
            raise ConfigError(f"models.{name}: a model block must be an object")
        try:
            spec = ModelConfig.model_validate(dict(block))
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
            )
            raise ConfigError(f"models.{name}: {problems}") from None
        try:
            build_settings(_config_with(config, spec))
        except ConfigError as err:
            raise ConfigError(f"models.{name}: {err}") from None
        specs[str(name)] = spec
    return specs


class ChatModels:
    """The config's models by name, the one in use, and the ones built so far.

    A bad ``models`` map is a ``ConfigError`` when the session starts, not when a model is
    chosen; building a model can still fail then (a missing checkpoint), which leaves the model
    in use as it was.
    """

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self.specs = _read_specs(config)
        self.current = DEFAULT_MODEL
        self._loaded: dict[str, LoadedModel] = {}

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    def load_default(self) -> LoadedModel:
        """Build the config's own model (at start, on the caller's thread)."""
        return self._build(DEFAULT_MODEL)

    def in_use(self) -> LoadedModel:
        return self._loaded[self.current]

    async def choose(self, name: str) -> LoadedModel:
        """Make ``name`` the model in use (built on a worker thread the first time)."""
        if name not in self.specs:
            known = ", ".join(self.specs)
            raise ConfigError(f"no model named {name!r} in the config; its models: {known}")
        loaded = self._loaded.get(name)
        if loaded is None:
            loaded = await anyio.to_thread.run_sync(self._build, name)
        self.current = name
        return loaded

    def _build(self, name: str) -> LoadedModel:
        config = _config_with(self.config, self.specs[name])
        loaded = LoadedModel(name, self.specs[name], build_model(config), build_settings(config))
        self._loaded[name] = loaded
        return loaded

    async def aclose(self) -> None:
        """Close the models built this session that hold connections (``aclose``)."""
        for loaded in self._loaded.values():
            close = getattr(loaded.backend, "aclose", None)
            if close is not None:
                await close()
