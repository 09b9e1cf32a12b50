"""Shared fixtures. Async tests use ``@pytest.mark.anyio`` (anyio's pytest plugin).

``recorded`` / ``recorded_with_content``: the OpenTelemetry SDK recording into memory for one
test (``tests/telemetry_support.py``, imported only by the tests that ask for them, so a session
without telemetry tests never imports the SDK).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from telemetry_support import Recorded


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    """Tracing and metrics on for this test, recorded in memory (content capture off)."""
    from telemetry_support import recording

    yield from recording()


@pytest.fixture
def recorded_with_content() -> Iterator[Recorded]:
    """Tracing and metrics on, tool arguments and results captured (limit 200 characters)."""
    from telemetry_support import recording

    yield from recording(capture_content=True, content_limit=200)
