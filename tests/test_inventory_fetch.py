"""Lists too slow for one scrape's deadline are used by the next scrape, not restarted."""
from __future__ import annotations

import threading

import pytest

from cri_exporter.collectors.inventory_fetch import MAX_LEFTOVER_AGE, InventoryFetch, InventoryNotYet
from cri_exporter.cri import CriError
from tests.exporter_proc import wait_for


class SlowLists:
    """A runtime whose ListContainers answers when `release` is set."""

    timeout = 5.0

    def __init__(self, fail: bool = False):
        self.release = threading.Event()
        self.calls = 0
        self.fail = fail

    def list_pod_sandboxes(self, timeout=None, reuse=None):
        return []

    def list_containers(self, timeout=None, reuse=None):
        self.calls += 1
        assert timeout == self.timeout, "the runtime's own deadline, not the scrape's"
        self.release.wait(10)
        if self.fail:
            raise CriError("ListContainers", "unix:///x.sock", "RESOURCE_EXHAUSTED", "too large")
        return []


def test_a_list_slower_than_the_deadline_is_taken_by_the_next_scrape():
    client = SlowLists()
    fetch = InventoryFetch(client)
    with pytest.raises(InventoryNotYet):
        fetch.get(0.05)
    with pytest.raises(InventoryNotYet):
        fetch.get(0.05)  # joins the fetch in flight
    assert client.calls == 1
    client.release.set()
    wait_for(lambda: fetch._current is not None and fetch._current.done.is_set(), what="the list to come")
    assert fetch.get(0.05).containers == []  # the answer nobody took yet, at once
    assert client.calls == 1
    fetch.get(1.0)  # taken: this scrape lists anew
    assert client.calls == 2


def test_an_old_or_failed_answer_is_not_served():
    now = [0.0]
    client = SlowLists()
    fetch = InventoryFetch(client, clock=lambda: now[0])
    with pytest.raises(InventoryNotYet):
        fetch.get(0.0)
    client.release.set()
    wait_for(lambda: fetch._current is not None and fetch._current.done.is_set(), what="the list to come")
    now[0] += MAX_LEFTOVER_AGE + 1
    fetch.get(1.0)
    assert client.calls == 2

    failing = SlowLists(fail=True)
    fetch = InventoryFetch(failing)
    with pytest.raises(InventoryNotYet):
        fetch.get(0.0)
    failing.release.set()
    wait_for(lambda: fetch._current is not None and fetch._current.done.is_set(), what="the list to fail")
    with pytest.raises(CriError):
        fetch.get(1.0)  # a new fetch, which fails in its turn
    assert failing.calls == 2


def test_a_fetch_run_inline_past_the_deadline_is_left_for_the_next_scrape():
    now = [0.0]

    class Late(SlowLists):
        def list_containers(self, timeout=None, reuse=None):
            self.calls += 1
            now[0] += 3.0  # the lists take 3 s of a 2 s scrape
            return []

    client = Late()
    fetch = InventoryFetch(client, clock=lambda: now[0])
    with pytest.raises(InventoryNotYet):
        fetch.get(2.0, inline=True)
    assert fetch.get(2.0, inline=True).containers == []
    assert client.calls == 1


def test_latest_is_the_newest_inventory_while_fresh_and_held():
    now = [0.0]
    client = SlowLists()
    client.release.set()
    fetch = InventoryFetch(client, clock=lambda: now[0])
    assert fetch.latest() is None
    inventory = fetch.get(5)
    assert fetch.latest() is inventory
    now[0] = MAX_LEFTOVER_AGE + 1
    assert fetch.latest() is None, "too old"
    assert fetch.latest(max_age=MAX_LEFTOVER_AGE + 2) is inventory
    fetch.get(5)  # the next fetch replaces the one that held it
    del inventory
    second = fetch.latest()
    assert second is not None and fetch.latest() is second, "the newest, not a copy kept alive"
