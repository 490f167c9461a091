"""Brute-force protection for logins: failures per (account, client) in a sliding window.

In memory: correct for the single platform process of the embedded mode. Several replicas
behind a load balancer would each keep their own counts (documented in docs/security.md).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque


class LoginThrottle:
    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def retry_after(self, account: str, client: str) -> float:
        """Seconds until this (account, client) may try again; 0 when allowed now."""
        key = (account.lower(), client)
        now = time.monotonic()
        with self._lock:
            failures = self._failures.get(key)
            if not failures:
                return 0.0
            while failures and now - failures[0] > self.window_s:
                failures.popleft()
            if len(failures) < self.max_failures:
                return 0.0
            return max(0.0, self.window_s - (now - failures[0]))

    def record_failure(self, account: str, client: str) -> None:
        with self._lock:
            self._failures[(account.lower(), client)].append(time.monotonic())

    def record_success(self, account: str, client: str) -> None:
        with self._lock:
            self._failures.pop((account.lower(), client), None)
