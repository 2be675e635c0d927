"""A slowly changing CRI answer asked at most once an interval, not on every scrape.

ImageFsInfo and ListImages answer neither a list call nor anything the
scrape reads otherwise, and change slowly: containerd sums ImageFsInfo from
its snapshot store, which a background sync refreshes every
`stats_collect_period` (10 s by default: pkg/cri/server/snapshots.go on
1.6-1.7, internal/cri/server/images/snapshots.go on 2.0-2.1), and the image
list moves with pulls and garbage collection. Asked on every scrape they
were 0.3 ms of the agent's CPU at 10 containers (docs/performance.md), and
ListImages costs the runtime more with every image it holds.

So an answer is reused while it is younger than the interval
(--image-interval) and the runtime's socket is the one it came from (a
restarted runtime binds a new socket: the answer goes with it, as the
Version answer kept by the runtime collector does). An answer is never
served older than the interval: past it the runtime is asked in the scrape
itself, and if it does not answer the call's error fails the collector as
it did when asked every scrape, and the kept answer is dropped (the next
scrape asks again). Ages are wall-clock, for the `*_age_seconds` series.
"""
from __future__ import annotations

import time
from typing import Callable, Generic, NamedTuple, TypeVar

from cri_exporter.cri.client import socket_identity

V = TypeVar("V")


class Answer(NamedTuple, Generic[V]):
    value: V
    taken_at: float  # wall clock, when the call started: the answer is at least this old


class KeptAnswer(Generic[V]):
    def __init__(self, interval: float):
        self.interval = interval
        # (the answer, the endpoint it came from, its socket's identity, monotonic start of the call)
        self._kept: tuple[Answer[V], str, tuple[int, int, int] | None, float] | None = None

    def get(self, endpoint: str, ask: Callable[[], V]) -> Answer[V]:
        """The kept answer if still young and from the same runtime, else `ask()`'s
        (kept). A failing `ask` raises, and nothing is kept."""
        identity = socket_identity(endpoint)
        kept = self._kept
        if (kept is not None and kept[1] == endpoint and kept[2] == identity
                and time.monotonic() - kept[3] < self.interval):
            return kept[0]
        self._kept = None
        started, taken_at = time.monotonic(), time.time()
        answer = Answer(ask(), taken_at)
        self._kept = (answer, endpoint, identity, started)
        return answer

    def age(self, answer: Answer[V]) -> float:
        return max(0.0, time.time() - answer.taken_at)
