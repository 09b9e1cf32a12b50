"""Identifiers and timestamps on the wire: UUID4 text, ISO 8601 UTC with milliseconds and Z."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from agent_runtime.protocols.a2a.types import format_timestamp, new_id, parse_timestamp


def test_new_ids_are_distinct_uuid4_text() -> None:
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in list(ids)[:200]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text  # lower-case, dashed, 36 characters


def test_timestamps_are_utc_with_milliseconds_whatever_the_zone() -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, 891234, tzinfo=UTC)
    assert format_timestamp(moment) == "2026-03-04T05:06:07.891Z"
    assert format_timestamp(moment.replace(tzinfo=None)) == "2026-03-04T05:06:07.891Z"  # naive
    plus_two = moment.astimezone(timezone(timedelta(hours=2)))
    assert format_timestamp(plus_two) == "2026-03-04T05:06:07.891Z"
    assert format_timestamp(moment.replace(microsecond=0)) == "2026-03-04T05:06:07.000Z"
    assert parse_timestamp(format_timestamp(moment)) == moment.replace(microsecond=891000)
