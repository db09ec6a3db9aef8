"""Failed sign-ins counted per account and per address over a sliding window. Past the limit,
sign-in is refused with 429 and a Retry-After, for known and unknown accounts alike."""

from __future__ import annotations

import collections
import math
import threading
import time

from cloudlet.errors import CloudletError


class TooManyAttempts(CloudletError):
    status, code, title = 429, "too_many_attempts", "Too many attempts"


class LoginThrottle:
    def __init__(self, attempts: int, window: float) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> collections.deque[float]:
        q = self._failures.setdefault(key, collections.deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def check(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                q = self._recent(key, now)
                if len(q) >= self.attempts:
                    wait = math.ceil(q[0] + self.window - now)
                    raise TooManyAttempts(
                        f"too many failed sign-ins; try again in {wait} s", retry_after=max(wait, 1)
                    )

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)
            if len(self._failures) > 100_000:  # forget idle keys rather than grow without end
                for key in [k for k, q in self._failures.items() if not q]:
                    del self._failures[key]

    def succeeded(self, account_key: str) -> None:
        with self._lock:
            self._failures.pop(account_key, None)
