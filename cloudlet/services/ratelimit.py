"""Failed sign-ins slow down whoever is guessing, never lock the account's owner out.

Failures are counted on three keys, each a count and the time of the latest one:

- **the (account, address) pair.** After ``attempts`` free failures, each further attempt from that
  pair waits ``BASE_DELAY * 2**(n - attempts)`` seconds after the last failure, capped at
  ``max_delay``. Someone failing against alice from address A never delays alice from address B.
- **the address alone**, across every account, with ``ADDRESS_FACTOR`` times the allowance: one
  address trying a password on many accounts (spraying) is slowed the same way.
- **the account alone**, across addresses, counting only failures from addresses that have not
  signed in to it successfully in the last ``KNOWN_TTL`` seconds. Past ``ADDRESS_FACTOR *
  attempts`` of them (guessing spread over many addresses) the account is *under pressure*: a pair
  whose address is not known to it loses its free allowance, so every failure of such a pair makes
  it wait (``PRESSURE_DELAY``, doubling, up to ``max_delay``). This only slows: the first attempt
  of any pair always goes through, so nobody can stop alice signing in by failing against her
  account, and addresses alice signed in from recently are not touched by it at all.

An attempt is counted when it starts and taken back when it succeeds, so a burst of parallel
guesses cannot all slip through before the first one fails. A success forgets its pair (the
address and account counts only lose that one attempt: a valid account of one's own must not
wash away the failures against others).

IPv6 addresses are counted by their /64, the block one subscriber usually holds, so stepping
through it gains nothing. Counts are forgotten ``forget`` seconds after their last failure (an
hour, or four times the longest wait). They are in memory, per process, at most ``MAX_KEYS`` rows a
table, the oldest dropped first: someone filling a table from thousands of addresses wins back no
more than the free allowance of their own oldest rows. With several replicas each keeps its own
counts, which multiplies an attacker's rate by the number of replicas at most.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cloudlet.errors import CloudletError

BASE_DELAY = 1.0  # seconds; the first wait past the free allowance
PRESSURE_DELAY = 10.0  # seconds; the first wait of an unknown address against an account under pressure
ADDRESS_FACTOR = 5  # an address (or an account under pressure) gets this many times the allowance
KNOWN_TTL = 30 * 86400.0  # seconds an address that signed in stays known to that account
MAX_KEYS = 20_000  # rows per table (about 4 MB each when full): past it, the oldest go first


class TooManyAttempts(CloudletError):
    status, code, title = 429, "too_many_attempts", "Too many attempts"


@dataclass(slots=True)
class _Count:
    failures: int
    last: float


def address_key(address: str) -> str:
    """The unit an address is counted in: an IPv4 address, an IPv6 /64, or the text as given."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def backoff(failures: int, free: int, base: float, cap: float) -> float:
    """Seconds to wait after the last of ``failures`` before the next attempt."""
    if failures < free:
        return 0.0
    return min(base * 2.0 ** min(failures - free, 64), cap)


class _Table:
    """Counts by key, least recently touched first, bounded in size."""

    def __init__(self, forget: float) -> None:
        self.forget = forget
        self.rows: dict[object, _Count] = {}

    def get(self, key: object, now: float) -> _Count | None:
        row = self.rows.get(key)
        if row is not None and now - row.last > self.forget:
            del self.rows[key]
            return None
        return row

    def add(self, key: object, now: float) -> None:
        row = self.get(key, now)
        self.rows.pop(key, None)  # re-inserted last: the dict's order is the order of ``last``
        self.rows[key] = _Count((row.failures if row else 0) + 1, now)
        # The oldest rows are first: drop the forgotten ones, and past the bound the oldest.
        while self.rows:
            oldest = next(iter(self.rows))
            if len(self.rows) <= MAX_KEYS and now - self.rows[oldest].last <= self.forget:
                break
            del self.rows[oldest]

    def take_back(self, key: object) -> None:
        row = self.rows.get(key)
        if row is not None:
            row.failures -= 1
            if row.failures <= 0:
                del self.rows[key]


class LoginThrottle:
    """See the module docstring. ``attempt`` before checking a password, ``succeeded`` after a
    right one; a wrong one needs no call (it was counted when it started)."""

    def __init__(
        self,
        attempts: int,
        max_delay: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        forget: float | None = None,
    ) -> None:
        self.attempts = attempts
        self.max_delay = max_delay
        self.clock = clock
        forget = max(forget or 3600.0, 4 * max_delay)  # never while a pause could still run
        self._pairs = _Table(forget)
        self._addresses = _Table(forget)
        self._accounts = _Table(forget)
        self._known = _Table(KNOWN_TTL)  # (account, address) pairs that signed in recently
        self._lock = threading.Lock()

    def _wait(self, account: str, address: str, now: float) -> float:
        known = self._known.get((account, address), now) is not None
        pressure = self._accounts.get(account, now)
        under_pressure = pressure is not None and pressure.failures >= ADDRESS_FACTOR * self.attempts
        free, base = (1, PRESSURE_DELAY) if under_pressure and not known else (self.attempts, BASE_DELAY)
        wait = 0.0
        for row, row_free, row_base in (
            (self._pairs.get((account, address), now), free, base),
            (self._addresses.get(address, now), ADDRESS_FACTOR * self.attempts, BASE_DELAY),
        ):
            if row is not None:
                pause = backoff(row.failures, row_free, row_base, self.max_delay)
                wait = max(wait, row.last + pause - now)
        return wait

    def attempt(self, account: str, address: str) -> None:
        """Count an attempt of ``account`` from ``address``, or refuse it (429, Retry-After) while
        that pair or that address must wait."""
        address = address_key(address)
        now = self.clock()
        with self._lock:
            wait = self._wait(account, address, now)
            if wait > 0:
                seconds = max(1, math.ceil(wait))
                raise TooManyAttempts(
                    f"too many failed sign-ins; try again in {seconds} s", retry_after=seconds
                )
            self._pairs.add((account, address), now)
            self._addresses.add(address, now)
            if self._known.get((account, address), now) is None:
                self._accounts.add(account, now)

    def succeeded(self, account: str, address: str) -> None:
        """The attempt was right: forget the pair's failures and know the address from now on."""
        address = address_key(address)
        now = self.clock()
        with self._lock:
            self._pairs.rows.pop((account, address), None)
            self._addresses.take_back(address)
            if self._known.get((account, address), now) is None:
                self._accounts.take_back(account)
            self._known.add((account, address), now)
