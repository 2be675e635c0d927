"""A reading taken every `interval` seconds in a thread of its own, off the
scrape path: the collectors serve the latest one (runtime processes,
container logs). A failed reading keeps the one before it and is logged;
it never ends the thread."""
from __future__ import annotations

import math
import threading
import time
from typing import Generic, Protocol, TypeVar

import structlog

from cri_exporter import memory_tuning

log = structlog.get_logger(__name__)


class Reading(Protocol):
    @property
    def taken_at(self) -> float: ...  # wall-clock time the reading started


T = TypeVar("T", bound=Reading)


class PeriodicReader(Generic[T]):
    thread_name = "periodic"
    failure = "periodic reading failed"  # the log line of a failed reading
    # At most this long a scrape waits for the first reading (its own timeout is the other bound).
    first_wait = math.inf

    def __init__(self, interval: float):
        self.interval = interval
        self.latest: T | None = None
        self.last_error: str | None = None
        self.first = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self) -> T:
        raise NotImplementedError

    def sample(self) -> None:
        try:
            self.latest = self.take()
            self.last_error = None
        except Exception as err:  # noqa: BLE001 -- a failed reading must not end the thread (logged below)
            self.last_error = f"{type(err).__name__}: {err}"
            log.warning(self.failure, error=self.last_error)
        finally:
            self.first.set()
            # The reading's temporaries are freed by now: their heap pages go back
            # at once, not at the next scrape's answer (memory_tuning; under 1 ms).
            memory_tuning.release_freed_memory()

    def current(self, timeout: float) -> T | None:
        """The latest reading, waiting up to `timeout` (and `first_wait`) for
        the first. Never started (an Exporter used in-process, as tests and the
        benchmark's floor do): read here, at most once an interval."""
        if self._thread is None:
            with self._lock:
                if self.latest is None or time.time() - self.latest.taken_at >= self.interval:
                    self.sample()
        else:
            self.first.wait(min(timeout, self.first_wait))
        return self.latest

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
