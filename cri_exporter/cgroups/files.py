"""Reading cgroup files: small, cheap, and tolerant of a cgroup that goes away.

A container can be deleted between resolving its directory and reading its
files. The kernel then answers ENOENT (directory gone), ENODEV (file opened
in a cgroup being removed) or ESRCH; none of that is an error of ours, so it
becomes `CgroupGone` and the caller drops the container for this scrape.
A file that is simply absent while its directory exists means this kernel or
configuration does not provide it (no swap accounting, PSI disabled, an
older kernel without `oom_kill`): that value is unknown, never zero.

Permission denied (EACCES, EPERM) is neither: the cgroup is there and busy,
but a mode change, a remount, an LSM denial or a capability the agent lost
keeps it from us. Taking that as "file absent" made a reading with every
field empty count as live, and the container's CPU series vanished while it
burned CPU. It raises `CgroupUnreadable`, and the reading of that cgroup
stops there: its usage comes from CRI until it can be read again.

Garbage or truncated content is skipped value by value and logged at debug;
the parsers here never raise.
"""
from __future__ import annotations

import errno
import math
import os
import random
import re
from typing import Any, Callable

import structlog

log = structlog.get_logger(__name__)

# Every cgroup file we read is a few KiB at most (memory.stat is ~3 KiB on
# 6.x); the bound only limits what a hostile or broken file can cost.
_READ_LIMIT = 256 * 1024
_CHUNK = 65536
_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO in a fixture or hostile tree cannot hang a scrape
_GONE_ERRNOS = (errno.ENOENT, errno.ENODEV, errno.ESRCH)
DENIED_ERRNOS = (errno.EACCES, errno.EPERM)

# v1 reports "no limit" as PAGE_COUNTER_MAX pages in bytes: LONG_MAX rounded
# down to the page size, 9223372036854771712 with 4 KiB pages and
# 9223372036854710272 with 64 KiB pages. Anything this close to 2**63 is
# "unlimited" whatever the page size.
_V1_UNLIMITED_FLOOR = 2**63 - 2**20
_NUMERIC_KEY = re.compile(r" [-+0-9]")


class CgroupGone(Exception):
    """The cgroup directory disappeared (container deleted) while we read it."""


class CgroupUnreadable(Exception):
    """Permission denied on a cgroup's directory or on one of its files.

    `read_at`: wall-clock time the cgroup was last read whole, 0.0 if never
    (set by NodeCgroups): a CRI value older than that would take a counter
    already served live backwards."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.read_at = 0.0


# LimitFiles' values, kept as dicts shared node-wide: most cgroups hold the
# same limits (no quota, a 100000 µs period, 1024 shares...), so a cgroup keeps
# one pointer to a dict many share instead of a dict of its own (a 5-entry
# dict is 184 bytes: 1.4 MB at 7,500 cgroups). A shared dict is never written:
# a new value makes a new dict. Bounded: past _SHARED_MAX distinct dicts the
# table starts again (sharing is an economy, not a correctness matter).
_SHARED: dict[tuple, dict[str, object]] = {}
_SHARED_MAX = 4096
_NOTHING: dict[str, object] = {}


class SharedTimes:
    """A time kept per cgroup (7,500 at 5,000 containers), rounded up to a
    `step` so that those of one step are one float object (a float each was
    24 bytes a cgroup, made anew among a scrape's temporaries). Rounded up,
    never down. Thread-safe enough: a race makes one float more, never a
    wrong one. Not for `read_at`, which must be the reading's own time."""

    __slots__ = ("step", "_floats")

    def __init__(self, step: float):
        self.step = step
        self._floats: dict[int, float] = {}

    def at_or_after(self, t: float) -> float:
        step = self.step
        k = math.ceil(t / step)
        shared = self._floats.get(k)
        if shared is None:
            shared = k * step
            if shared < t:  # k * step rounded below t
                shared = t
            if len(self._floats) >= 1024:  # the times in use are a few hundred steps
                self._floats.clear()
            self._floats[k] = shared
        return shared


# The limit files' expiry times (monotonic): 0.1 s apart is spread enough.
_EXPIRIES = SharedTimes(0.1)


class LimitFiles:
    """One cgroup's limit files (CFS quota, period, shares / weight, memory and
    pids limits), read again only once `due()` says so.

    A limit is written when the container is created and again only by an
    in-place resize, yet it is about a third of the files a scrape reads.
    Keeping the text for about a minute (`refresh_seconds`, spread so that
    containers started together are not all re-read in one scrape) makes
    a resize show up within that time instead of at the next scrape.
    """

    __slots__ = ("_values", "_expires")

    def __init__(self) -> None:
        self._values = _NOTHING
        self._expires = 0.0

    def due(self, now: float, refresh_seconds: float) -> None:
        """Forget the kept values if they are older than about `refresh_seconds`."""
        if now >= self._expires:
            self._values = _NOTHING
            self._expires = _EXPIRIES.at_or_after(now + refresh_seconds * random.uniform(0.75, 1.25))

    def value(self, directory: str, name: str, parse: Callable[[str | None, str], Any]) -> Any:
        """`parse(text, name)` of `directory/name`, kept as parsed: the limit
        texts were kept and parsed again at every scrape, five parses a cgroup
        (some 2 µs) for values that change about once a minute at most."""
        try:
            return self._values[name]
        except KeyError:
            value = parse(read(directory, name), name)
            kept = {**self._values, name: value}
            key = tuple(kept.items())
            if len(_SHARED) >= _SHARED_MAX:
                _SHARED.clear()
            self._values = _SHARED.setdefault(key, kept)
            # The shared dict's own value: one object node-wide for each limit, not one a cgroup.
            return self._values[name]


class _Unkept:
    """LimitFiles' interface for a one-off read: every file read now."""

    @staticmethod
    def value(directory: str, name: str, parse: Callable[[str | None, str], Any]) -> Any:
        return parse(read(directory, name), name)


UNKEPT = _Unkept()


def read(directory: str, name: str) -> str | None:
    """The text of `directory/name`, None if this cgroup does not have that file.

    Raises CgroupGone when the directory itself is gone, CgroupUnreadable
    when permission to read it is denied.
    """
    path = f"{directory}/{name}"
    try:
        fd = os.open(path, _FLAGS)
    except OSError as err:
        _missing(directory, path, err)
        return None
    try:
        data = os.read(fd, _CHUNK)
        # seq_file (every cgroup file) and regular files fill the buffer up
        # to EOF, so a short read is the end: saves a syscall per file.
        if len(data) == _CHUNK:
            chunks = [data]
            size = _CHUNK
            while size < _READ_LIMIT:
                chunk = os.read(fd, _CHUNK)
                chunks.append(chunk)
                size += len(chunk)
                if len(chunk) < _CHUNK:
                    break
            data = b"".join(chunks)
    except OSError as err:
        _missing(directory, path, err)
        return None
    finally:
        os.close(fd)
    return data.decode("ascii", "replace")  # positional: half the call's cost of errors=, once a file


def _missing(directory: str, path: str, err: OSError) -> None:
    if err.errno in _GONE_ERRNOS and not os.path.isdir(directory):
        raise CgroupGone(directory) from err
    if err.errno == errno.ENODEV:
        # ENODEV while the directory is still listed: rmdir is in progress.
        raise CgroupGone(directory) from err
    if err.errno in DENIED_ERRNOS:
        raise CgroupUnreadable(path, err.strerror or "permission denied") from err
    if err.errno != errno.ENOENT:
        log.debug("cgroup file unreadable", path=path, error=str(err))
    return None


def to_int(text: str | None, path: str = "") -> int | None:
    """A single integer file (`memory.usage_in_bytes`, `pids.current`)."""
    if text is None:
        return None
    value = text.strip()
    try:
        return int(value)
    except ValueError:
        log.debug("cgroup value not an integer", path=path, value=value[:64])
        return None


def limit(text: str | None, path: str = "") -> int | None:
    """A limit file: "max" (v2) or v1's near-2**63 value or -1 mean no limit -> None."""
    if text is None:
        return None
    if text.strip() == "max":
        return None
    value = to_int(text, path)
    if value is None or value < 0 or value >= _V1_UNLIMITED_FLOOR:
        return None
    return value


def flat_keyed(text: str | None, path: str = "") -> dict[str, int]:
    """`key value` lines (cpu.stat, memory.stat, memory.events, v1 oom_control).

    A line that is not exactly a key and an integer is skipped: a truncated
    last line loses only its own value.
    """
    out: dict[str, int] = {}
    if not text:
        return out
    # Fast path for a well-formed file: every line one key and one integer.
    # A value token in a key's place (keys never start with a digit or "-")
    # or a key in a value's place (int() fails) means a malformed line: then
    # line by line.
    tokens = text.split()
    if len(tokens) == 2 * (text.count("\n") + (not text.endswith("\n"))):
        keys = tokens[::2]
        if _NUMERIC_KEY.search(" " + " ".join(keys)) is None:
            try:
                return dict(zip(keys, map(int, tokens[1::2])))
            except ValueError:
                pass
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            if parts:
                log.debug("cgroup line skipped", path=path, line=line[:80])
            continue
        try:
            out[parts[0]] = int(parts[1])
        except ValueError:
            log.debug("cgroup line skipped", path=path, line=line[:80])
    return out


def keyed_texts(text: str | None, path: str = "") -> dict[str, str] | dict[str, int]:
    """flat_keyed's pairs, each value still its text: int() then runs only on
    the values a caller uses (memory.stat has some 40 lines of which 8 are
    exported; converting all of them was half of its parse).

    The texts are those of a well-formed file (the line count matches, no key
    starts like a number, every value ASCII digits: all checked by C-level
    string methods over the whole file), so every value here converts; any
    other file goes line by line through flat_keyed, whose ints come back."""
    if not text:
        return {}
    tokens = text.split()
    values = tokens[1::2]
    if len(tokens) == 2 * (text.count("\n") + (not text.endswith("\n"))):
        digits = "".join(values)
        if digits.isascii() and digits.isdigit():
            keys = tokens[::2]
            if _NUMERIC_KEY.search(" " + " ".join(keys)) is None:
                return dict(zip(keys, values))
    return flat_keyed(text, path)


def keyed(text: str | None, wanted: tuple[str, ...], path: str = "") -> dict[str, int]:
    """flat_keyed(text) restricted to `wanted`, int() of those values only."""
    raw = keyed_texts(text, path)
    return {k: int(raw[k]) for k in wanted if k in raw}


def nested_keyed(text: str | None, path: str = "") -> dict[str, dict[str, str]]:
    """`key sub=value sub=value` lines (v2 io.stat, PSI *.pressure files)."""
    out: dict[str, dict[str, str]] = {}
    if not text:
        return out
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        fields: dict[str, str] = {}
        for part in parts[1:]:
            key, sep, value = part.partition("=")
            if sep:
                fields[key] = value
            else:
                log.debug("cgroup field skipped", path=path, field=part[:80])
        out[parts[0]] = fields
    return out


def field_int(fields: dict[str, str], key: str, path: str = "") -> int | None:
    value = fields.get(key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        log.debug("cgroup field not an integer", path=path, key=key, value=value[:64])
        return None
