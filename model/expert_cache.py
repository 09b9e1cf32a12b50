"""The resident set of offloaded experts: a byte- and count-budgeted cache with an eviction policy.

An offloaded model keeps only some routed experts in fast memory (CPU RAM, or GPU memory with
CUDA); :class:`ExpertCache` decides which. It is shared by every layer of a model (keys are
``(layer, expert)``), so a hot expert of one layer can displace a cold one of another. Policies:

* ``"lru"``: evict the least recently used entry;
* ``"lfu"``: evict the entry used least often (counts persist across evictions, so an expert that
  was hot stays valued after it is dropped; ties go to the least recently used). A newcomer is a
  candidate too: under a skewed routing trace a one-off expert is dropped again at once instead of
  displacing a hot one. A prefetched entry not yet used counts one use more (the one predicted
  for it), so a prediction is not the first thing evicted before its layer runs.

The budget bounds what stays cached *between* uses. A value is handed to its caller before any
eviction can drop it, so one step whose experts exceed the budget still gets them all (the caller's
references keep them alive until it is done); the cache then keeps at most the budget.

Statistics (:class:`CacheStats`) count demand hits and misses, bytes loaded from the backing store,
prefetched entries and the prefetched entries that a later demand access found (prefetch hits).
All methods are thread-safe: a background prefetcher inserts while the model computes.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import asdict, dataclass
from typing import Generic, Literal, TypeVar

__all__ = ["CachePolicy", "CacheStats", "ExpertCache"]

CachePolicy = Literal["lru", "lfu"]
V = TypeVar("V")


@dataclass
class CacheStats:
    """Counters of an :class:`ExpertCache` since it was made (or last :meth:`ExpertCache.reset_stats`)."""

    hits: int = 0
    misses: int = 0
    bytes_loaded: int = 0
    prefetch_loads: int = 0
    prefetch_hits: int = 0
    prefetch_unused: int = 0  # prefetched entries evicted before any demand access used them
    evictions: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def as_dict(self) -> dict[str, float]:
        out: dict[str, float] = {k: float(v) for k, v in asdict(self).items()}
        out["hit_rate"] = self.hit_rate
        return out


@dataclass
class _Entry(Generic[V]):
    value: V
    nbytes: int
    prefetched: bool  # loaded by the prefetcher and not yet used by a demand access
    tick: int  # last access, for LRU order and LFU ties


class ExpertCache(Generic[V]):
    """Keeps at most ``max_items`` entries and ``max_bytes`` bytes (``None``: no limit on that
    measure; both ``None``: keeps everything), evicting by ``policy``."""

    def __init__(
        self,
        *,
        max_items: int | None = None,
        max_bytes: int | None = None,
        policy: CachePolicy = "lru",
    ) -> None:
        if policy not in ("lru", "lfu"):
            raise ValueError(f"unknown cache policy {policy!r}; use 'lru' or 'lfu'")
        if max_items is not None and max_items < 0:
            raise ValueError(f"max_items must be >= 0, got {max_items}")
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.policy: CachePolicy = policy
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, _Entry[V]] = OrderedDict()  # oldest access first
        self._bytes = 0
        self._ticks = itertools.count()
        self._freq: dict[Hashable, int] = {}
        self._heap: list[tuple[int, int, int, Hashable]] = []  # (freq, tick, seq, key), lazy
        self._seq = itertools.count()

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    @property
    def resident_bytes(self) -> int:
        return self._bytes

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._entries)

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = CacheStats()

    # ------------------------------------------------------------------ access
    def get(self, key: Hashable) -> V | None:
        """The cached value (a demand access: counted as a hit or a miss), or ``None``."""
        with self._lock:
            entry = self._entries.get(key)
            self._count_use(key)
            if entry is None:
                self.stats.misses += 1
                return None
            self.stats.hits += 1
            if entry.prefetched:
                entry.prefetched = False
                self.stats.prefetch_hits += 1
            self._touch(key, entry)
            return entry.value

    def peek(self, key: Hashable) -> V | None:
        """The cached value without counting a use (reporting, not computing)."""
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry.value

    def put(
        self,
        key: Hashable,
        value: V,
        nbytes: int,
        *,
        loaded_bytes: int | None = None,
        prefetched: bool = False,
        demanded: bool = False,
    ) -> None:
        """Insert a value just loaded, then evict down to the budget. ``nbytes``: what it occupies
        (the budget's measure); ``loaded_bytes``: what was read to make it (default ``nbytes``).

        A demand load (``prefetched=False``) follows the :meth:`get` miss that counted its use.
        A prefetched one is not a use until a later :meth:`get` finds it (a prefetch hit), unless
        ``demanded``: a demand access missed it while it was loading and is waiting for it."""
        with self._lock:
            self.stats.bytes_loaded += nbytes if loaded_bytes is None else loaded_bytes
            if prefetched:
                self.stats.prefetch_loads += 1
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            entry = _Entry(value, nbytes, prefetched and not demanded, 0)
            self._entries[key] = entry
            self._bytes += nbytes
            self._touch(key, entry)
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._heap.clear()
            self._bytes = 0

    # ------------------------------------------------------------------ policy
    def _count_use(self, key: Hashable) -> None:
        self._freq[key] = self._freq.get(key, 0) + 1

    def _touch(self, key: Hashable, entry: _Entry[V]) -> None:
        entry.tick = next(self._ticks)
        self._entries.move_to_end(key)
        if self.policy == "lfu":
            heapq.heappush(self._heap, (self._score(key, entry), entry.tick, next(self._seq), key))
            if len(self._heap) > 4 * len(self._entries) + 64:
                self._rebuild_heap()

    def _score(self, key: Hashable, entry: _Entry[V]) -> int:
        return self._freq.get(key, 0) + entry.prefetched

    def _rebuild_heap(self) -> None:
        self._heap = [
            (self._score(k, e), e.tick, next(self._seq), k) for k, e in self._entries.items()
        ]
        heapq.heapify(self._heap)

    def _over_budget(self) -> bool:
        return (self.max_items is not None and len(self._entries) > self.max_items) or (
            self.max_bytes is not None and self._bytes > self.max_bytes
        )

    def _evict(self) -> None:
        while self._entries and self._over_budget():
            key = self._victim()
            entry = self._entries.pop(key)
            self._bytes -= entry.nbytes
            self.stats.evictions += 1
            if entry.prefetched:
                self.stats.prefetch_unused += 1

    def _victim(self) -> Hashable:
        if self.policy == "lru":
            return next(iter(self._entries))
        while True:
            _, tick, _, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            # Stale heap records (the entry was touched again, or evicted) are skipped.
            if entry is not None and entry.tick == tick:
                return key
