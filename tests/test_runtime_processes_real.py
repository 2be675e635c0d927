"""The runtime's own processes (issue 15.4) against the lab's real containerd:
every value compared with /proc as psutil (an independent reader) sees it,
a restart moves the start time, zombies under a shim and a leaked shim show.

The daemon and shims are live processes: a value is compared with psutil's
reading taken just before and just after ours, retried until both agree
(nothing moved in between), never with a tolerance.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from crilab import Containerd, run_pod
from crilab.scenario import SLEEP, LeakedSandbox, leak_sandbox
from cri_exporter.collectors.runtime_processes import RuntimeProcessesCollector
from cri_exporter.cri import CriClient
from cri_exporter.cri import api_pb2 as api
from cri_exporter.hostfs import HostFS
from cri_exporter.runtime_processes import RuntimeProcesses, RuntimeProcessSampler
from cri_exporter.collectors.base import ScrapeContext
from tests.exporter_proc import parse, wait_for

pytestmark = pytest.mark.containerd

SHIM = "containerd-shim-runc-v2"
DEADLINE = 30.0


def reader_for(cd: Containerd, root: str = "/") -> RuntimeProcesses:
    return RuntimeProcesses(HostFS(root), lambda: cd.endpoint)


def agreed(ours, theirs, what: str, deadline: float = DEADLINE):
    """(ours(), theirs()) once theirs() read the same just before and just after ours()."""
    end = time.monotonic() + deadline
    while True:
        before = theirs()
        got = ours()
        if theirs() == before:
            return got, before
        assert time.monotonic() < end, f"{what} never held still for one reading"
        time.sleep(0.05)  # poll interval of the deadline-bound wait


def truth(pid: int) -> tuple[int, int, int]:
    p = psutil.Process(pid)
    return p.memory_info().rss, p.num_threads(), p.num_fds()


def cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def zombies_under(pid: int) -> int:
    n = 0
    for child in psutil.Process(pid).children(recursive=True):
        try:
            n += child.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            pass
    return n


def collect(collector: RuntimeProcessesCollector, cd: Containerd):
    """The collector's families as a scrape makes them (its own CRI inventory call)."""
    client = CriClient(cd.endpoint, timeout=10)
    try:
        ctx = ScrapeContext(client, HostFS("/"), time.monotonic() + 20)
        text = "".join(_lines(collector.collect(ctx)))
    finally:
        client.close()
    return parse(text)


def _lines(families):
    from prometheus_client.exposition import generate_latest

    class _One:
        def collect(self):
            return families
    from prometheus_client import CollectorRegistry
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_One())
    return generate_latest(reg).decode()


# ---- the shared lab: values against /proc ----

def test_daemon_matches_proc(lab):
    cd, _ = lab
    reader = reader_for(cd)
    daemon, want = agreed(lambda: reader.read().daemon, lambda: truth(cd.pid), "containerd")
    assert daemon is not None and daemon.pid == cd.pid and daemon.name == "containerd"
    assert (daemon.resident_bytes, daemon.threads, daemon.open_fds) == want
    p = psutil.Process(cd.pid)
    assert daemon.start_time_seconds == pytest.approx(p.create_time(), abs=0.011)
    assert daemon.max_fds == p.rlimit(psutil.RLIMIT_NOFILE)[0]
    before = cpu(cd.pid)
    got = reader.read().daemon.cpu_seconds
    assert before - 1e-9 <= got <= cpu(cd.pid) + 1e-9


def test_shims_match_proc(lab):
    cd, pods = lab
    reader = reader_for(cd)

    def ours():
        return {s.pid: (s.resident_bytes, s.threads, s.open_fds) for s in reader.read().shims}

    def theirs():
        return {pid: truth(pid) for pid in cd.shim_pids()}

    shims, want = agreed(ours, theirs, "the shims")
    assert shims == want and len(shims) >= 1
    sample = reader.read()
    assert {s.name for s in sample.shims} == {SHIM}
    assert {s.namespace for s in sample.shims} == {"k8s.io"}
    # containerd groups a pod's containers under its sandbox's shim: -id is the sandbox id (1.6, 1.7, 2.1)
    sandboxes = {sb.id for sb in cd.runtime_stub().ListPodSandbox(api.ListPodSandboxRequest()).items}
    assert {s.id for s in sample.shims} <= sandboxes
    for s in sample.shims:
        assert s.start_time_seconds == pytest.approx(psutil.Process(s.pid).create_time(), abs=0.011)
    assert sample.zombies[SHIM] == sum(zombies_under(s.pid) for s in sample.shims)


def test_other_containerds_shims_are_not_counted(lab, tmp_path):
    """The reader counts only the shims whose -address is this runtime's socket."""
    cd, _ = lab
    elsewhere = RuntimeProcesses(HostFS("/"), lambda: f"unix://{tmp_path}/none.sock")
    sample = elsewhere.read()
    assert sample.daemon is None
    assert not {s.pid for s in sample.shims} & set(cd.shim_pids())


def test_reader_under_a_host_root(lab, tmp_path):
    """--host-root: the host's procfs and the runtime's directory mounted under
    a root, as in the DaemonSet; the daemon's --config is read under the root."""
    cd, _ = lab
    root = tmp_path / "host"
    mounts = [("/proc", root / "proc"), (str(cd.base), Path(str(root) + str(cd.base)))]
    done = []
    try:
        for src, dst in mounts:
            dst.mkdir(parents=True)
            subprocess.run(["mount", "--bind", src, str(dst)], check=True)
            done.append(dst)
        reader = RuntimeProcesses(HostFS(str(root)), lambda: f"unix://{root}{cd.socket_path}")
        assert reader.socket == cd.socket_path
        sample = reader.read()
        assert sample.daemon is not None and sample.daemon.pid == cd.pid
        assert {s.pid for s in sample.shims} == set(cd.shim_pids())
    finally:
        for dst in reversed(done):
            subprocess.run(["umount", "-l", str(dst)], check=True)


def test_exporter_serves_them(exporter, lab):
    cd, _ = lab
    samples = exporter.scrape()
    assert samples.get1("cri_scrape_collector_success", collector="runtime_processes") == 1
    assert samples.get1("cri_runtime_process_start_time_seconds", process="containerd") == pytest.approx(
        psutil.Process(cd.pid).create_time(), abs=0.011)
    assert samples.get1("cri_runtime_process_max_fds", process="containerd") == \
        psutil.Process(cd.pid).rlimit(psutil.RLIMIT_NOFILE)[0]
    assert samples.get1("cri_runtime_shims", process=SHIM) >= 1
    assert samples.get1("cri_runtime_shims_leaked", process=SHIM) == 0
    assert samples.get1("cri_runtime_process_sample_processes") > samples.get1("cri_runtime_shims", process=SHIM)


# ---- a containerd of the module's own: zombies, restarts, leaks ----

@pytest.fixture(scope="module")
def own(lab_dir, runtime_version):
    cd = Containerd(os.path.join(lab_dir, f"rtproc-{runtime_version}"), version=runtime_version).start()
    leaked: list[LeakedSandbox] = []
    try:
        yield cd, leaked
    finally:
        cd.cleanup()
        for sandbox in leaked:  # what containerd no longer knows of, cleanup() cannot remove
            sandbox.forget()


def test_zombies_under_a_shim(own):
    """`sleep 1 &` then exec: the background sleep's parent becomes a process
    that never waits, so it stays a zombie inside the container."""
    cd, _ = own
    pod = run_pod(cd, "zombies", "rtproc")
    pod.add_container("leaky", ["sh", "-c", "sleep 1 & sleep 1 & exec sleep 2147483647"])
    reader = reader_for(cd)
    shim = next(s for s in reader.read().shims if s.id == pod.id)
    wait_for(lambda: zombies_under(shim.pid) == 2, timeout=DEADLINE, what="two zombies under the shim")
    sample = reader.read()
    assert sample.zombies[SHIM] == sum(zombies_under(s.pid) for s in sample.shims) == 2


def test_restart_changes_start_time(own):
    cd, _ = own
    reader = reader_for(cd)
    first = reader.read().daemon
    assert first is not None and first.pid == cd.pid
    cd.restart()
    second = wait_for(lambda: reader.read().daemon, timeout=DEADLINE, what="the restarted containerd")
    assert second.pid == cd.pid != first.pid
    assert second.start_time_seconds == pytest.approx(psutil.Process(cd.pid).create_time(), abs=0.011)
    assert second.start_time_seconds > first.start_time_seconds


def _pods_and_containers(cd: Containerd) -> tuple[dict[str, int], dict[str, int]]:
    """CRI's sandboxes and containers, id -> state."""
    rt = cd.runtime_stub()
    return ({sb.id: sb.state for sb in rt.ListPodSandbox(api.ListPodSandboxRequest()).items},
            {c.id: c.state for c in rt.ListContainers(api.ListContainersRequest()).containers})


def test_leaked_shim_is_reported(own):
    """A shim outlives its sandbox's containerd state (crilab.scenario.leak_sandbox:
    the task bundles of one pod moved away while containerd was down, then the
    sandbox, NOTREADY, removed over CRI as the kubelet does): that shim alone is
    reported, on 1.6.20, 1.7.24 and 2.1.9, and every other pod of the runtime
    keeps running, READY, its shim known."""
    cd, leaked = own
    bystander = run_pod(cd, "bystander", "rtproc")
    bystander.add_container("c", SLEEP)
    pod = run_pod(cd, "leaky", "rtproc")
    pod.add_container("c", SLEEP)
    pod.add_container("d", SLEEP)  # two containers: one shim serves the pod's sandbox and both (1.6 to 2.1)
    reader = reader_for(cd)
    sampler = RuntimeProcessSampler(reader, 3600)
    collector = RuntimeProcessesCollector(sampler, leak_grace=0)
    sampler.sample()
    assert collect(collector, cd).get1("cri_runtime_shims_leaked", process=SHIM) == 0
    shims = {s.id: s.pid for s in sampler.latest.shims}
    assert pod.id in shims and bystander.id in shims
    pods_before, containers_before = _pods_and_containers(cd)
    others = {id_: state for id_, state in pods_before.items() if id_ != pod.id}
    leaky_containers = {i for ids in pod.containers.values() for i in ids}
    other_containers = {id_: state for id_, state in containers_before.items() if id_ not in leaky_containers}
    assert bystander.id in others and set(bystander.containers["c"]) <= set(other_containers)
    old_daemon = cd.pid

    leaked.append(leak_sandbox(cd, pod))
    assert cd.pid != old_daemon  # it was restarted
    assert leaked[-1].shim_pid == shims[pod.id]
    # the shim and what it runs outlive the pod's state: still running, not a zombie
    shim = psutil.Process(shims[pod.id])
    assert shim.status() != psutil.STATUS_ZOMBIE
    children = shim.children()  # pause, c and d
    assert len(children) == 3 and not {p.status() for p in children} & {psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD}
    pods_after, containers_after = _pods_and_containers(cd)
    assert pod.id not in pods_after and not leaky_containers & set(containers_after)
    # every other pod: as it was (READY stays READY, a running container keeps running), and it still works
    assert {id_: pods_after.get(id_) for id_ in others} == others
    assert {id_: containers_after.get(id_) for id_ in other_containers} == other_containers
    assert pods_after[bystander.id] == api.SANDBOX_READY
    cid = bystander.containers["c"][0]
    out = cd.runtime_stub().ExecSync(api.ExecSyncRequest(container_id=cid, cmd=["echo", "alive"], timeout=20))
    assert (out.exit_code, out.stdout) == (0, b"alive\n")
    assert bystander.container_status(bystander.add_container("e", SLEEP)).state == api.CONTAINER_RUNNING
    healthy = run_pod(cd, "healthy", "rtproc")  # a shim the restarted containerd started

    sampler.sample()
    samples = collect(collector, cd)
    now = {s.id: s.pid for s in sampler.latest.shims}
    assert now == {**shims, healthy.id: now[healthy.id]}  # every shim as before, plus the new pod's
    assert samples.get1("cri_runtime_shims", process=SHIM) == len(cd.shim_pids()) == len(shims) + 1
    assert samples.get1("cri_runtime_shims_leaked", process=SHIM) == 1  # the leaky pod's, no other
    # not yet leaked: younger than the grace a sandbox gets to appear in CRI's list
    assert collect(RuntimeProcessesCollector(sampler), cd).get1("cri_runtime_shims_leaked", process=SHIM) == 0
