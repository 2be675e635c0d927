"""The runtime's lists (ListPodSandbox + ListContainers), fetched so that work
too slow for one scrape's deadline makes progress across scrapes.

Cut to each scrape's deadline, a list that takes longer than the deadline
(20,000 containers on a loaded node: over 20 MB to receive and parse) was
started and abandoned at every scrape and never answered once. Here a fetch
runs to the runtime's own deadline (--runtime-timeout) in a thread of its own,
whichever scrape started it: a scrape whose deadline comes first fails its
inventory, the next one joins the fetch still in flight, or takes the answer
that came after the last scrape gave up (if younger than MAX_LEFTOVER_AGE).
When the runtime answers in time, every scrape fetches its own lists, as before.
"""
from __future__ import annotations

import threading
import time
import weakref
from typing import Callable

from cri_exporter.cri import CriClient
from cri_exporter.inventory import Inventory

# An answer nobody waited for is served by the next scrape only this fresh: at
# Prometheus's usual intervals (15-60 s) the next scrape is well within it.
MAX_LEFTOVER_AGE = 60.0


class InventoryNotYet(Exception):
    """The scrape's deadline came first; the fetch goes on for the next scrape."""


class _Fetch:
    __slots__ = ("done", "value", "error", "finished_at", "taken")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Inventory | None = None
        self.error: Exception | None = None
        self.finished_at = 0.0
        self.taken = False


class InventoryFetch:
    """One fetch in flight at a time, shared by the scrapes that ask meanwhile."""

    def __init__(self, client: CriClient, clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.clock = clock
        self._lock = threading.Lock()
        self._current: _Fetch | None = None
        self._last: tuple[weakref.ref[Inventory], float] | None = None
        # The newest inventory fetched: the next fetch keeps its objects where
        # the runtime's answer is unchanged (cri/list_reuse.py). Held anyway
        # until the next fetch replaces it, by the fetch and the scrapes.
        self._previous: Inventory | None = None

    def get(self, wait: float, inline: bool = False) -> Inventory:
        """The inventory: a fresh answer no scrape took yet, the fetch in flight,
        or a new fetch; waits up to `wait` seconds. Raises CriError if the fetch
        failed, InventoryNotYet if `wait` ran out first.

        `inline`: a new fetch runs in the calling thread, to its end whatever
        `wait` says: for a caller that is itself a thread someone else waits
        for with the deadline (a scrape step), one thread handover fewer."""
        until = self.clock() + max(0.0, wait)
        with self._lock:
            fetch = self._current
            reuse = (fetch is not None and not fetch.done.is_set()) or (
                fetch is not None and fetch.error is None and not fetch.taken
                and self.clock() - fetch.finished_at <= MAX_LEFTOVER_AGE)
            start = not reuse
            if start:
                fetch = self._current = _Fetch()
        assert fetch is not None
        if start and inline:
            self._run(fetch)
            if self.clock() > until:  # nobody waits for it any more: the next scrape's
                raise InventoryNotYet("the runtime's lists came after the scrape deadline; the next scrape takes them")
        elif start:
            threading.Thread(target=self._run, args=(fetch,), name="inventory-fetch", daemon=True).start()
        if not fetch.done.wait(max(0.0, wait)):
            raise InventoryNotYet("the scrape deadline came before the runtime's lists; "
                                  "the next scrape takes them when they come")
        fetch.taken = True
        if fetch.error is not None:
            raise fetch.error
        assert fetch.value is not None
        return fetch.value

    def latest(self, max_age: float = MAX_LEFTOVER_AGE) -> Inventory | None:
        """The newest inventory fetched, if no older than `max_age` seconds
        and still held (by the fetch not yet replaced, or a scrape): for a
        reader off the scrape path (pod_logs.py), which then neither lists the
        runtime again nor keeps a copy. Weakly held: never kept alive here."""
        last = self._last
        if last is None or self.clock() - last[1] > max_age:
            return None
        return last[0]()

    def _run(self, fetch: _Fetch) -> None:
        try:
            previous = self._previous
            timeout = self.client.timeout
            if previous is None:
                pods = self.client.list_pod_sandboxes(timeout=timeout)
                containers = self.client.list_containers(timeout=timeout)
            else:
                pods = self.client.list_pod_sandboxes(timeout=timeout, reuse=previous.pods_by_id)
                containers = self.client.list_containers(
                    timeout=timeout, reuse={c.id: c for c in previous.containers})
            fetch.value = self._previous = Inventory(pods, containers, previous)
            self._last = (weakref.ref(fetch.value), self.clock())
        except Exception as err:  # noqa: BLE001 -- CriError or a bug: raised in each scrape that waits for it
            fetch.error = err
        finally:
            fetch.finished_at = self.clock()
            fetch.done.set()
