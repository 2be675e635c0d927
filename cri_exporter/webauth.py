"""What the web config asks of each request: basic auth and a rate limit.

bcrypt is slow by design (about 90 ms at cost 10 on the lab machine), so a
flood of wrong passwords could keep every core busy hashing. Here it cannot:

- Credentials once checked are remembered, as a keyed hash of user, stored
  hash and password (never the password itself): Prometheus's scrapes cost
  one bcrypt after start and none after, and a scraper retrying a wrong
  password costs none either. Right and wrong answers have bounded caches of
  their own, so a flood of distinct wrong passwords evicts only wrong ones.
- bcrypt runs on one thread of its own, so it takes one core at most; the
  `bcrypt` package releases the GIL while hashing, so the event loop and the
  render threads go on meanwhile.
- At most MAX_PENDING checks wait for that thread, one per client address;
  past that a request is answered 503 at once (the toolkit queues them all
  behind a mutex). A client flooding from one address holds one slot, so a
  scraper elsewhere still gets its first check through.

The password is compared by bcrypt.checkpw, in constant time. An unknown user
is checked against a known user's hash all the same (the toolkit uses a
fixed hash for this), so the time taken does not tell which users exist, and
user names are compared with hmac.compare_digest, each against all.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import concurrent.futures as cf
import hashlib
import hmac
import os
import time
from collections.abc import Callable, Mapping

from cri_exporter.webconfig import RateLimit

OK, UNAUTHORIZED, BUSY = "ok", "unauthorized", "busy"
MAX_PENDING = 4  # checks waiting for the bcrypt thread, in all
MAX_PENDING_PER_CLIENT = 1
CHECK_TIMEOUT = 10.0  # seconds a request waits for its check (costs above 14 take longer at 4 deep)
VERIFIED_CACHE = 64  # right credentials remembered (a few users, a password change or two)
REFUSED_CACHE = 1024  # wrong ones
BCRYPT_MAX_PASSWORD = 72  # bcrypt reads no further; htpasswd and Go's bcrypt hash only these bytes


def basic_credentials(authorization: str | None) -> tuple[bytes, bytes] | None:
    """(user, password) of an `Authorization: Basic` value, as Go's Request.BasicAuth reads it."""
    if not authorization or authorization[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].encode("latin-1"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    import bcrypt  # here: serve without basic auth loads none of it

    try:
        return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed)
    except ValueError:  # a hash the `bcrypt` package cannot read (webconfig checks their form at load)
        return False


class BasicAuth:
    def __init__(self) -> None:
        self._secret = os.urandom(32)
        self._verified: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._refused: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._pending: dict[bytes, asyncio.Future[bool]] = {}
        self._clients: collections.Counter[str] = collections.Counter()
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")
        self.hashed = 0  # bcrypt checks run, for tests

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def check(self, users: Mapping[str, bytes], authorization: str | None, client: str) -> str:
        """OK, UNAUTHORIZED, or BUSY when the check would have to wait for
        others past the bound. `users` must not be empty."""
        credentials = basic_credentials(authorization)
        if credentials is None:
            return UNAUTHORIZED
        user, password = credentials
        hashed, known = _lookup(users, user)
        key = self._key(user, hashed, password)
        if key in self._verified:
            self._verified.move_to_end(key)
            return OK
        if key in self._refused:
            return UNAUTHORIZED
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= MAX_PENDING or self._clients[client] >= MAX_PENDING_PER_CLIENT:
                return BUSY
            pending = asyncio.get_running_loop().run_in_executor(self._pool, self._run, password, hashed, known)
            self._pending[key] = pending
            self._clients[client] += 1
            pending.add_done_callback(lambda f: self._settle(key, client, f))
        try:
            matched = await asyncio.wait_for(asyncio.shield(pending), CHECK_TIMEOUT)
        except TimeoutError:
            return BUSY
        return OK if matched else UNAUTHORIZED

    def _run(self, password: bytes, hashed: bytes, known: bool) -> bool:
        self.hashed += 1
        return _checkpw(password, hashed) and known

    def _settle(self, key: bytes, client: str, done: asyncio.Future[bool]) -> None:
        del self._pending[key]
        self._clients[client] -= 1
        if self._clients[client] <= 0:
            del self._clients[client]
        if done.cancelled() or done.exception() is not None:
            return
        cache, bound = (self._verified, VERIFIED_CACHE) if done.result() else (self._refused, REFUSED_CACHE)
        cache[key] = None
        if len(cache) > bound:
            cache.popitem(last=False)

    def _key(self, user: bytes, hashed: bytes, password: bytes) -> bytes:
        h = hashlib.blake2b(key=self._secret, digest_size=32)
        for part in (user, hashed, password):
            h.update(len(part).to_bytes(4, "big"))
            h.update(part)
        return h.digest()


def _lookup(users: Mapping[str, bytes], user: bytes) -> tuple[bytes, bool]:
    """The user's hash, or (unknown user) the first user's, to be checked all the same."""
    found = None
    for name, hashed in users.items():
        if hmac.compare_digest(name.encode(), user):
            found = hashed
    if found is not None:
        return found, True
    return next(iter(users.values())), False


class TokenBucket:
    """golang.org/x/time/rate's Limiter.Allow, as the toolkit's rate_limit uses it:
    starts full with `burst` tokens, gains one every `interval` seconds."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self._clock = clock
        self._tokens = float(limit.burst)
        self._stamp = clock()

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(float(self.limit.burst), self._tokens + (now - self._stamp) / self.limit.interval)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
