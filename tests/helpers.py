"""Shared test helpers: real-daemon requirements, free ports, polling."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def require_real(reason: str) -> None:
    """Skip when a real daemon is missing, except where it must be there (make test, CI): fail."""
    if os.environ.get("CLOUDLET_REQUIRE_REAL") or os.environ.get("CI"):
        pytest.fail(f"required for this test run: {reason}")
    pytest.skip(reason)


def require_service(reason: str) -> None:
    """A service the README tells users to install themselves (PostgreSQL): CI has it and must
    use it; on a user's machine without it, the tests that need it are skipped, visibly."""
    if os.environ.get("CI"):
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(f"{reason} (see README: PostgreSQL for the integration suite)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(
    fn: Callable[[], T], *, timeout: float = 60, interval: float = 0.5, what: str = "condition"
) -> T:
    """Call ``fn`` until it returns a truthy value without raising; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last error: {last!r}")
