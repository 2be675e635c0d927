"""Readings made in a thread of their own, so the screen answers q at once even
while the runtime hangs (each CRI call still has its deadline)."""
from __future__ import annotations

import threading
import time

from cri_exporter.top.sampler import Reading, Sampler


def read_safely(sampler: Sampler) -> Reading:
    """A reading, or one that says what broke: the view shows it and tries again."""
    try:
        return sampler.read()
    except Exception as err:  # noqa: BLE001 - a bug must not take the screen down with a traceback
        return Reading(time.monotonic(), time.time(), None, error=f"reading failed: {type(err).__name__}: {err}")


class Feed:
    def __init__(self, sampler: Sampler, interval: float):
        self.sampler = sampler
        self.interval = interval
        self._lock = threading.Lock()
        self._before: Reading | None = None
        self._now: Reading | None = None
        self._version = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="top-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end; a call in flight ends at its deadline (the thread is a daemon)."""
        self._stop.set()

    def latest(self) -> tuple[int, Reading | None, Reading | None]:
        """(version, the reading before the latest, the latest); the version grows with each reading."""
        with self._lock:
            return self._version, self._before, self._now

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            reading = read_safely(self.sampler)
            with self._lock:
                self._before, self._now = self._now, reading
                self._version += 1
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
