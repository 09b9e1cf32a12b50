"""What ``serve`` runs a node on: uvloop when installed, with the collector tuned for a node."""

from __future__ import annotations

import asyncio
import gc

from agent_runtime.protocols.a2a.serve import GC_YOUNG_THRESHOLD, run_loop


def test_run_loop_uses_uvloop_and_tunes_the_collector() -> None:
    before = gc.get_threshold()
    seen: dict[str, object] = {}

    async def main() -> None:
        seen["loop"] = type(asyncio.get_running_loop()).__module__
        seen["threshold"] = gc.get_threshold()
        seen["frozen"] = gc.get_freeze_count()

    try:
        gc.set_threshold(700, before[1], before[2])
        run_loop(main())
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert str(seen["loop"]).startswith("uvloop")  # the a2a extra installs it
    assert seen["threshold"] == (GC_YOUNG_THRESHOLD, before[1], before[2])
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 0


def test_a_higher_threshold_already_set_is_kept() -> None:
    before = gc.get_threshold()

    async def main() -> None:
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD * 3

    try:
        gc.set_threshold(GC_YOUNG_THRESHOLD * 3, before[1], before[2])
        run_loop(main())
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
