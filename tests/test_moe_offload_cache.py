"""The resident-expert cache of offloaded models: budgets, LRU and LFU eviction, statistics."""

from __future__ import annotations

import pytest

from agent_runtime.model.expert_cache import ExpertCache


def test_lru_evicts_the_least_recently_used_entry() -> None:
    cache: ExpertCache[str] = ExpertCache(max_items=2, policy="lru")
    cache.put("a", "A", 1)
    cache.put("b", "B", 1)
    assert cache.get("a") == "A"  # "b" is now the least recent
    cache.put("c", "C", 1)
    assert sorted(map(str, cache.keys())) == ["a", "c"]
    assert cache.stats.evictions == 1


def test_lfu_keeps_frequent_entries_and_drops_a_one_off_newcomer() -> None:
    cache: ExpertCache[str] = ExpertCache(max_items=2, policy="lfu")
    for key in ("hot", "warm"):
        assert cache.get(key) is None
        cache.put(key, key.upper(), 1)
    for _ in range(3):
        assert cache.get("hot") == "HOT"
    assert cache.get("warm") == "WARM"
    # A first-time key is a candidate too: it has the lowest count, so it goes, not "warm".
    assert cache.get("cold") is None
    cache.put("cold", "COLD", 1)
    assert sorted(map(str, cache.keys())) == ["hot", "warm"]
    # Counts survive eviction: once "cold" is used more than "warm", it displaces it.
    for _ in range(3):
        if cache.get("cold") is None:
            cache.put("cold", "COLD", 1)
    assert sorted(map(str, cache.keys())) == ["cold", "hot"]


def test_lru_under_the_same_trace_keeps_the_newcomer() -> None:
    cache: ExpertCache[str] = ExpertCache(max_items=2, policy="lru")
    for key in ("hot", "warm"):
        cache.put(key, key, 1)
    cache.get("hot")
    cache.get("warm")
    cache.put("cold", "cold", 1)
    assert sorted(map(str, cache.keys())) == ["cold", "warm"]


def test_byte_budget_bounds_resident_bytes() -> None:
    cache: ExpertCache[int] = ExpertCache(max_bytes=100)
    for i in range(10):
        cache.put(i, i, 30)
        assert cache.resident_bytes <= 100
    assert len(cache) == 3
    assert cache.stats.bytes_loaded == 300


def test_a_step_larger_than_the_budget_still_gets_every_value() -> None:
    cache: ExpertCache[list[int]] = ExpertCache(max_items=1)
    held = []
    for i in range(4):
        value = [i]
        cache.put(i, value, 8)
        held.append(value)
    assert held == [[0], [1], [2], [3]]  # the caller's references are untouched
    assert len(cache) == 1 and cache.resident_bytes == 8


def test_zero_budget_keeps_nothing() -> None:
    cache: ExpertCache[int] = ExpertCache(max_items=0)
    cache.put("k", 1, 4)
    assert len(cache) == 0 and cache.resident_bytes == 0


def test_statistics_count_hits_misses_and_prefetches() -> None:
    cache: ExpertCache[int] = ExpertCache(max_items=2)
    assert cache.get("a") is None
    cache.put("a", 1, 10)
    cache.put("b", 2, 10, prefetched=True)
    cache.put("c", 3, 10, prefetched=True)  # evicts "a"
    assert cache.get("b") == 2  # a prefetched entry found by a demand access
    assert cache.get("b") == 2  # ... counted once
    cache.put("d", 4, 10)  # evicts "c", prefetched and never used
    s = cache.stats
    assert (s.hits, s.misses, s.prefetch_loads, s.prefetch_hits, s.prefetch_unused) == (
        2,
        1,
        2,
        1,
        1,
    )
    assert s.bytes_loaded == 40 and s.hit_rate == pytest.approx(2 / 3)
    assert cache.peek("b") == 2 and cache.stats.hits == 2  # peeking is not a use


def test_lfu_heap_stays_bounded_under_many_accesses() -> None:
    cache: ExpertCache[int] = ExpertCache(max_items=4, policy="lfu")
    for i in range(2000):
        key = i % 7
        if cache.get(key) is None:
            cache.put(key, key, 1)
    assert len(cache) == 4
    assert len(cache._heap) <= 4 * len(cache) + 64


def test_unknown_policy_and_negative_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match="policy"):
        ExpertCache(policy="fifo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_items"):
        ExpertCache(max_items=-1)
    with pytest.raises(ValueError, match="max_bytes"):
        ExpertCache(max_bytes=-1)


def test_lfu_does_not_evict_a_fresh_prediction_before_equally_used_entries() -> None:
    cache: ExpertCache[str] = ExpertCache(max_items=2, policy="lfu")
    for key in ("a", "b"):
        assert cache.get(key) is None
        cache.put(key, key, 1)
    cache.put("next", "next", 1, prefetched=True)  # counts its predicted use: "a" (older) goes
    assert sorted(map(str, cache.keys())) == ["b", "next"]
    assert cache.get("next") == "next" and cache.stats.prefetch_hits == 1
