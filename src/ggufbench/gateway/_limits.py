"""Admission: a per-key rate limit and a bound on generations at once."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field


@dataclass
class _Bucket:
    tokens: float
    stamp: float = field(default_factory=time.monotonic)


class RateLimiter:
    """A token bucket per API key: ``per_minute`` requests, bursts up to that many."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, _Bucket] = {}

    def retry_after(self, key: str) -> int:
        """Take one request for ``key``: 0 when allowed, else seconds to wait."""
        if self.per_minute <= 0:
            return 0
        rate = self.per_minute / 60.0
        now = time.monotonic()
        bucket = self._buckets.setdefault(key, _Bucket(float(self.per_minute), now))
        bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0
        return max(1, math.ceil((1.0 - bucket.tokens) / rate))


class Gate:
    """At most ``limit`` generations at once; up to ``max_queue`` wait ``timeout_s``."""

    def __init__(self, limit: int, max_queue: int, timeout_s: float) -> None:
        self.limit = limit
        self._sem = asyncio.Semaphore(limit)
        self._max_queue = max_queue
        self._timeout_s = timeout_s
        self._waiting = 0

    async def enter(self) -> bool:
        """Take a slot; False when the queue is full or the wait timed out."""
        if not self._sem.locked():
            await self._sem.acquire()
            return True
        if self._waiting >= self._max_queue:
            return False
        self._waiting += 1
        try:
            await asyncio.wait_for(self._sem.acquire(), self._timeout_s)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self._waiting -= 1

    def leave(self) -> None:
        self._sem.release()
