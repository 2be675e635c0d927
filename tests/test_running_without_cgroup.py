"""The rules of running_without_cgroup.py on readings made by hand: what must never read as a
container running without its cgroup (the real runtimes' case is
tests/test_running_without_cgroup_real.py)."""
from __future__ import annotations

from cri_exporter.cri import model
from cri_exporter.inventory import ContainerIdentity, Inventory, cgroup_backed
from cri_exporter.running_without_cgroup import GRACE_SECONDS, RunningWithoutCgroup

LIVE = object()  # a reading's Usage: only None or not matters here


def _pod(name: str, state: str = "ready", handler: str = "") -> model.PodSandbox:
    return model.PodSandbox(f"s-{name}", name, "shop", f"uid-{name}", 0, state, 1, {}, handler)


def _container(pod: str, state: str = "running") -> model.Container:
    return model.Container(f"c-{pod}", f"s-{pod}", "app", 0, "img", "sha", state, 1, {})


def _inv(*pods: tuple[str, str, str, str]) -> Inventory:
    """(pod name, pod state, handler, container state) each."""
    return Inventory([_pod(n, ps, h) for n, ps, h, _ in pods], [_container(n, cs) for n, _, _, cs in pods])


def _update(tracker, inv, containers, pods, now, denied=None):
    return {i.pod: since for i, since in tracker.update(inv, containers, pods, denied or {}, cgroup_backed, now)}


def test_confirmed_after_two_readings_a_grace_apart_and_cleared_by_a_cgroup_or_an_exit():
    t = RunningWithoutCgroup()
    inv = _inv(("ok", "ready", "", "running"), ("dead", "ready", "", "running"))
    readings = ({"c-ok": LIVE, "c-dead": None}, {"uid-ok": LIVE, "uid-dead": LIVE})
    assert _update(t, inv, *readings, now=100) == {}
    assert _update(t, inv, *readings, now=101) == {}  # two readings, but not a grace apart
    assert _update(t, inv, *readings, now=100 + GRACE_SECONDS) == {"dead": 100}
    assert _update(t, inv, *readings, now=200) == {"dead": 100}
    # a reading cut short before the container (or its pod) neither confirms nor clears it
    assert _update(t, inv, {"c-ok": LIVE}, {}, now=210) == {}
    assert _update(t, inv, *readings, now=220) == {"dead": 100}
    # its cgroup found (a just-exited race that passed): forgotten, the count starts again
    assert _update(t, inv, {"c-ok": LIVE, "c-dead": LIVE}, readings[1], now=230) == {}
    assert _update(t, inv, *readings, now=240) == {}
    # the runtime records the exit: no longer running, forgotten
    exited = _inv(("ok", "ready", "", "running"), ("dead", "ready", "", "exited"))
    assert _update(t, exited, {"c-ok": LIVE}, readings[1], now=300) == {}
    assert _update(t, inv, *readings, now=301) == {}


def test_a_layout_the_agent_cannot_resolve_never_reads_as_dead_containers():
    """No container cgroup ever found (an unknown leaf naming) or the pod's cgroup not found
    either (unknown layout, missing root): nothing counts, whatever the number of readings."""
    t = RunningWithoutCgroup()
    inv = _inv(("a", "ready", "", "running"), ("b", "ready", "", "running"))
    for now in (0, 100, 200):
        assert _update(t, inv, {"c-a": None, "c-b": None}, {"uid-a": LIVE, "uid-b": LIVE}, now) == {}
    for now in (300, 400, 500):
        assert _update(t, inv, {"c-a": LIVE, "c-b": None}, {"uid-a": LIVE, "uid-b": None}, now) == {}


def test_denied_vm_handlers_and_pods_not_ready_never_count():
    t = RunningWithoutCgroup()
    inv = _inv(("ok", "ready", "", "running"), ("denied", "ready", "", "running"),
               ("kata", "ready", "kata-qemu", "running"), ("paused", "notready", "", "running"))
    containers = {"c-ok": LIVE, "c-denied": None, "c-kata": None, "c-paused": None}
    pods = {"uid-ok": LIVE, "uid-denied": LIVE, "uid-kata": LIVE}
    for now in (0, 100, 200):
        assert _update(t, inv, containers, pods, now, denied={"c-denied": PermissionError()}) == {}


def test_only_running_current_containers_are_kept():
    t = RunningWithoutCgroup()
    inv = _inv(("a", "ready", "", "running"))
    _update(t, inv, {"c-a": None}, {"uid-a": LIVE}, now=0)
    gone = _inv(("b", "ready", "", "running"))
    _update(t, gone, {"c-b": LIVE}, {"uid-b": LIVE}, now=10)
    assert t._seen == {}
    assert ContainerIdentity("shop", "a", "app") not in dict(t.update(inv, {"c-a": None}, {"uid-a": LIVE}, {},
                                                                       cgroup_backed, 20))
