"""Memory tuning of the agent's own process (malloc arenas and thresholds,
gc.freeze): it runs on every node for months, so its memory is worth a few lines.

glibc gives each thread that meets contention its own malloc arena (up to
8 per core) and keeps what each has freed. The agent's threads (collectors,
HTTP handlers, gRPC) each allocate during a scrape, so at 1,000 containers
per-thread arenas held some 8 MB more than two arenas do (measured with
benchmarks/bench.py; the gunicorn and Ruby-on-Rails communities set the same
limit, MALLOC_ARENA_MAX=2, for the same reason). An arena limit set in the
environment (MALLOC_ARENA_MAX) wins.

Large blocks (a scrape's answer from the runtime, its gzip body, the lists
of a 5,000-container scrape) come and go once per scrape. glibc raises its
mmap threshold each time such a block is freed, after which they are carved
from the heap and leave holes it keeps; a fixed threshold (128 KiB, glibc's
own starting value) keeps them in mappings returned the moment they are
freed, and `release_freed_memory()` after each scrape hands back the heap's
free pages (malloc_trim; under a millisecond). Together: 8 to 12 MB less
resident at 5,000 containers (benchmarks/bench.py).

Objects alive at startup (modules, the exporter itself: some 60,000) never
die; `gc.freeze()` moves them out of the collector's sight, so a scrape's
collections no longer walk them (7 ms a scrape at 1,000 containers).
"""
from __future__ import annotations

import ctypes
import gc
import os

# glibc malloc.h; each with the environment variable that overrides it
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
ARENAS = 2
MMAP_THRESHOLD = 128 * 1024
TRIM_THRESHOLD = 256 * 1024


def _libc():
    """The C library the interpreter runs on, by the process's own symbols (dlopen(NULL), as
    confine_landlock.py): ctypes.util.find_library would import shutil and tempfile (0.5 MB
    resident in `serve`, which needs neither) and run `ldconfig -p` in a child."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    # glibc only (not musl)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def tune_malloc() -> dict[str, bool]:
    """Cap glibc's arenas and fix its mmap and trim thresholds, each unless
    set in the environment; says which took effect (none without glibc)."""
    settings = {
        "MALLOC_ARENA_MAX": (_M_ARENA_MAX, ARENAS),
        "MALLOC_MMAP_THRESHOLD_": (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        "MALLOC_TRIM_THRESHOLD_": (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    }
    return {env: _LIBC is not None and env not in os.environ and bool(_LIBC.mallopt(param, value))
            for env, (param, value) in settings.items()}


def release_freed_memory() -> None:
    """Give the heap's free pages back to the kernel (glibc; a no-op elsewhere)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def freeze_startup_objects() -> None:
    gc.collect()
    gc.freeze()
