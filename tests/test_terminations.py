"""The termination tracker's rules on made-up inventories: what a real runtime
cannot be made to do on demand (the 1.6.20 Error-then-OOMKilled race, a wild
attempt number), and the event watcher's choice for CRI-O, which the lab does
not have. Real counting is in test_terminations_real.py."""
from __future__ import annotations

from cri_exporter.cri import model
from cri_exporter.inventory import ContainerIdentity, Inventory
import threading

from cri_exporter.terminations import (MAX_GAP, SETTLE_SECONDS, EventWatcher, TerminationTracker, broadcasts_events,
                                       exit_code_label, reason_label)
from tests.exporter_proc import wait_for

UID = "u1"
LABELS = {model.LABEL_POD_NAME: "p", model.LABEL_POD_NAMESPACE: "ns", model.LABEL_POD_UID: UID,
          model.LABEL_CONTAINER_NAME: "c"}
IDENT = ContainerIdentity("ns", "p", "c")


def _c(attempt: int, state: str) -> model.Container:
    return model.Container(f"id{attempt}", "sb", "c", attempt, "img", "imgid", state, attempt, dict(LABELS))


def _status(cid: str, reason: str, code: int, finished: float) -> model.ContainerStatus:
    return model.ContainerStatus(cid, "exited", 1, int(finished * 1e9), code, reason, "")


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_labels_are_bounded():
    assert [exit_code_label(c) for c in (0, 1, 137, 143, 5, 255, None)] == \
        ["0", "1", "137", "143", "other", "other", "unknown"]
    assert reason_label("OOMKilled") == "OOMKilled"
    assert reason_label("") == "Unknown"
    assert reason_label("weird reason\n{x}") == "Other"


def test_only_runtimes_that_broadcast_are_subscribed():
    v = lambda name, version: model.RuntimeVersion("0.1.0", name, version, "v1")  # noqa: E731
    assert broadcasts_events(v("containerd", "v2.1.9"))
    assert broadcasts_events(v("containerd", "2.1.9~ds1-5"))
    assert not broadcasts_events(v("containerd", "1.7.24~ds1-6"))  # one subscriber per event: steals the kubelet's
    assert not broadcasts_events(v("containerd", "v1.6.20"))
    # CRI-O, from its source (cri_exporter/terminations.py): one subscriber per event before 1.28, a
    # broadcaster that can panic when a subscriber leaves from 1.28 to 1.32, fixed in 1.33.0
    assert not broadcasts_events(v("cri-o", "1.27.8"))
    assert not broadcasts_events(v("cri-o", "1.28.0"))
    assert not broadcasts_events(v("cri-o", "1.32.13"))
    assert broadcasts_events(v("cri-o", "1.33.0"))
    assert broadcasts_events(v("cri-o", "1.35.2"))
    assert not broadcasts_events(v("cri-dockerd", "0.3.15"))
    assert not broadcasts_events(v("containerd", "garbage"))


def test_a_sigkill_is_counted_once_the_runtime_has_settled_on_its_reason():
    clock = Clock()
    t = TerminationTracker(clock)
    t.observe(Inventory([], [_c(0, "running")]), lambda cid: None)  # baseline: nothing exited
    answers = {"id0": _status("id0", "Error", 137, clock.now)}
    t.observe(Inventory([], [_c(0, "exited")]), answers.get)
    assert t.snapshot() == []  # 137 "Error" seconds old: 1.6.20 may still turn it into OOMKilled
    answers["id0"] = _status("id0", "OOMKilled", 137, clock.now)
    t.observe(Inventory([], [_c(0, "exited")]), answers.get)
    assert t.snapshot() == [(IDENT, "OOMKilled", "137", 1)]
    clock.now += SETTLE_SECONDS + 1
    t.observe(Inventory([], [_c(0, "exited")]), answers.get)
    assert t.snapshot() == [(IDENT, "OOMKilled", "137", 1)]


def test_an_unsettled_exit_removed_meanwhile_counts_with_what_it_said_last():
    clock = Clock()
    t = TerminationTracker(clock)
    t.observe(Inventory([], [_c(0, "running")]), lambda cid: None)
    t.observe(Inventory([], [_c(0, "exited")]), {"id0": _status("id0", "Error", 137, clock.now)}.get)
    t.observe(Inventory([], [_c(1, "running")]), lambda cid: None)
    assert t.snapshot() == [(IDENT, "Error", "137", 1)]


def test_a_wild_attempt_number_is_bounded():
    t = TerminationTracker(Clock())
    t.observe(Inventory([], [_c(0, "running")]), lambda cid: None)
    for _ in range(2):
        t.observe(Inventory([], [_c(10**9, "running")]), lambda cid: None)
    assert t.snapshot() == [(IDENT, "Unknown", "unknown", MAX_GAP)]


def test_a_long_crash_loop_holds_no_history():
    clock = Clock(0.0)
    t = TerminationTracker(clock)
    t.observe(Inventory([], [_c(0, "running")]), lambda cid: None)
    for a in range(1, 200):
        clock.now += 60
        prev = _c(a - 1, "exited")
        t.observe(Inventory([], [prev, _c(a, "running")]),
                  {prev.id: _status(prev.id, "Error", 1, clock.now - 30)}.get)
    assert t.snapshot() == [(IDENT, "Error", "1", 199)]
    track = next(iter(t._tracks.values()))
    assert track.floor == 199 and not track.accounted


def test_another_runtime_is_a_new_baseline():
    t = TerminationTracker(Clock())
    t.observe(Inventory([], [_c(0, "running")]), lambda cid: None, "unix:///a.sock")
    other = model.Container("x0", "sb", "c", 4, "img", "imgid", "exited", 1, dict(LABELS, **{model.LABEL_POD_UID: "u2"}))
    for _ in range(3):
        t.observe(Inventory([], [other, _c(5, "running")]), lambda cid: None, "unix:///b.sock")
    assert t.snapshot() == []


def test_instances_listed_newest_first_count_once():
    """ListContainers has no order: counting attempt 1 raises the floor past attempt 0 (accounted
    at the baseline, then forgotten), which must not make 0 look new (seen on 1.6.20)."""
    clock = Clock()
    t = TerminationTracker(clock)
    t.observe(Inventory([], [_c(0, "exited")]), lambda cid: None)
    answers = {"id0": _status("id0", "Error", 2, clock.now - 60), "id1": _status("id1", "Error", 5, clock.now - 30)}
    for _ in range(3):
        t.observe(Inventory([], [_c(1, "exited"), _c(0, "exited")]), answers.get)
    assert t.snapshot() == [(IDENT, "Error", "other", 1)]


class _CrioAnswers:
    """CRI-O's answers to the watcher's two calls (version() and container_events()), as its
    source gives them: with enable_pod_events off (its default) GetContainerEvents returns at
    once, so the stream ends empty. Counts the calls."""

    def __init__(self, version: str):
        self.version_answer = model.RuntimeVersion("0.1.0", "cri-o", version, "v1")
        self.versions = self.subscriptions = 0
        self.asked = threading.Event()

    def version(self):
        self.versions += 1
        if self.versions >= 3:
            self.asked.set()
        return self.version_answer

    def container_events(self):
        self.subscriptions += 1

        class _Empty:
            def __iter__(self):
                return iter(())

            def cancel(self):
                pass
        return _Empty()


def _watch(version: str) -> tuple[_CrioAnswers, EventWatcher]:
    answers = _CrioAnswers(version)
    watcher = EventWatcher(answers, TerminationTracker())
    watcher.RECHECK_SECONDS = 0.01  # poll interval of its version checks, shortened (production: a minute)
    watcher.start()
    try:
        wait_for(answers.asked.is_set, timeout=10, what="three version checks")
    finally:
        watcher.stop()
    return answers, watcher


def test_crio_before_1_33_is_never_subscribed():
    """CRI-O 1.32 broadcasts but may panic when a subscriber leaves (cri-o issue 9004): asked its
    version again and again, the watcher never calls GetContainerEvents."""
    answers, watcher = _watch("1.32.13")
    assert answers.subscriptions == 0 and watcher.events == 0 and not watcher.subscribed


def test_crio_with_pod_events_off_ends_the_stream_empty_and_nothing_breaks():
    """CRI-O 1.33 is subscribed; with enable_pod_events off each stream ends at once, empty: no
    break is counted (nothing was delivered) and the watcher waits its recheck interval before
    asking again, so the poll does the counting."""
    answers, watcher = _watch("1.33.0")
    assert answers.subscriptions >= 2
    assert watcher.breaks == 0 and watcher.events == 0 and not watcher.subscribed
