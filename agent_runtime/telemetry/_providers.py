"""Finding the application's OpenTelemetry providers in well under a microsecond.

The API's ``get_tracer_provider()`` / ``get_meter_provider()`` look up an environment variable
on every call while no provider is set; the runtime asks on every tool call, so it reads the
API's global first and falls back to the API's own getter only where that can give something
else (the environment names a provider class, or a future API keeps the global elsewhere).
Nothing here imports OpenTelemetry: a process that has not imported it has no provider.

:class:`PerProvider` keeps what the runtime makes from a provider (its tracer, its metric
instruments) until the application installs another one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["PerProvider", "meter_provider", "tracer_provider"]

T = TypeVar("T")

_UNSET = object()
_from_env: dict[str, bool] = {}


def _provider(module_name: str, field: str, getter: str, env_var: str) -> Any | None:
    module = sys.modules.get(module_name)
    if module is None:
        return None
    provider = getattr(module, field, _UNSET)
    if provider is None:
        named = _from_env.get(env_var)
        if named is None:
            named = _from_env[env_var] = env_var in os.environ
        if not named:
            return None  # nothing set: the API would hand out its no-op proxy
    elif provider is not _UNSET:
        return provider
    return getattr(module, getter)()


def tracer_provider() -> Any | None:
    """The global tracer provider, or ``None`` when none was set (or OpenTelemetry is not
    imported)."""
    return _provider(
        "opentelemetry.trace",
        "_TRACER_PROVIDER",
        "get_tracer_provider",
        "OTEL_PYTHON_TRACER_PROVIDER",
    )


def meter_provider() -> Any | None:
    """The global meter provider, or ``None`` when none was set."""
    return _provider(
        "opentelemetry.metrics._internal",
        "_METER_PROVIDER",
        "get_meter_provider",
        "OTEL_PYTHON_METER_PROVIDER",
    )


class PerProvider(Generic[T]):
    """What ``make`` derives from the provider ``find`` returns, made once per provider object.

    :meth:`get` costs one call of ``find`` and one identity check while the provider stays the
    same; ``None`` while there is no provider, or when ``make`` says the provider records
    nothing (the API's no-op and proxy providers)."""

    __slots__ = ("_cached", "_find", "_make")

    def __init__(self, find: Callable[[], Any | None], make: Callable[[Any], T | None]) -> None:
        self._find = find
        self._make = make
        # One tuple, replaced whole: a thread never sees one provider with another's value.
        self._cached: tuple[Any, T | None] = (None, None)

    def get(self) -> T | None:
        provider = self._find()
        cached = self._cached
        if provider is cached[0]:
            return cached[1]
        if provider is None:
            return None
        value = self._make(provider)
        self._cached = (provider, value)
        return value
