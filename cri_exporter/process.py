"""Settings for the agent's own process: it runs on every node for months, so
its memory is worth a few lines.

glibc gives each thread that meets contention its own malloc arena (up to
8 per core) and keeps what each has freed. The agent's threads (collectors,
HTTP handlers, gRPC) each allocate during a scrape, so at 1,000 containers
per-thread arenas held some 8 MB more than two arenas do (measured with
benchmarks/bench.py; the gunicorn and Ruby-on-Rails communities set the same
limit, MALLOC_ARENA_MAX=2, for the same reason). An arena limit set in the
environment (MALLOC_ARENA_MAX) wins.

Objects alive at startup (modules, the exporter itself: some 60,000) never
die; `gc.freeze()` moves them out of the collector's sight, so a scrape's
collections no longer walk them (7 ms a scrape at 1,000 containers).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os

_M_ARENA_MAX = -8  # glibc malloc.h
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas; False where that is not possible (musl, or set in the environment)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def freeze_startup_objects() -> None:
    gc.collect()
    gc.freeze()
