"""What differs between the containerd versions of the lab, measured on the
real binaries (crilab.versions: 1.6.20, 1.7.24, 2.1.9), so that the exporter's
and the doctor's assumptions about each version are facts, not memories.

Each test runs on every version and states what that version does.
"""
from __future__ import annotations

import os
import signal
import time

import grpc
import pytest

from cri_exporter.cri import CriClient
from cri_exporter.cri.client import CriError
from cri_exporter.cri import api_pb2 as api
from cri_exporter.cri import api_pb2_grpc as api_grpc
from crilab import Containerd, run_pod
from tests import cgroup_truth
from tests.exporter_proc import wait_for

pytestmark = pytest.mark.containerd

BURN = ["sh", "-c", "while :; do :; done"]


def test_the_version_runs_with_its_own_config_format(containerd, pods, runtime_version):
    """1.x reads a version 2 file, 2.x the version 3 a 2.x node carries; the
    running binary is the version's own (not the installed 1.6)."""
    v = containerd.runtime_stub().Version(api.VersionRequest())
    assert v.runtime_name == "containerd" and v.runtime_version.startswith(runtime_version + ".")
    config = (containerd.base / "config.toml").read_text()
    if containerd.version.major >= 2:
        assert config.startswith("version = 3") and 'plugins."io.containerd.cri.v1.images".pinned_images' in config
        assert "bin_dirs = " in config and "io.containerd.grpc.v1.cri" not in config
    else:
        assert config.startswith("version = 2") and 'sandbox_image = "localhost/pause:test"' in config
    exe = f"/proc/{containerd.pid}/exe"
    assert os.path.realpath(exe) == str(containerd.version.bin_dir() / "containerd")
    shims = containerd.shim_pids()
    assert shims and all(os.path.realpath(f"/proc/{p}/exe").startswith(str(containerd.version.bin_dir()))
                         for p in shims), "the shims come from the version's own bin dir"


def _raw(cd: Containerd, method: str):
    """Call a RuntimeService method the project's client does not know, with an empty request."""
    call = cd._channel.unary_unary(f"/runtime.v1.RuntimeService/{method}",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return call(b"", timeout=10)


def test_rpcs_each_version_implements(containerd, runtime_version):
    """ListPodSandboxMetrics and ListMetricDescriptors (the kubelet's
    PodAndContainerStatsFromCRI) are Unimplemented on all three; RuntimeConfig
    (KubeletCgroupDriverFromCRI) only 2.x answers: cgroupfs for runc without
    SystemdCgroup, as the lab runs it."""
    for method in ("ListPodSandboxMetrics", "ListMetricDescriptors"):
        with pytest.raises(grpc.RpcError) as err:
            _raw(containerd, method)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED, (method, err.value)
    client = CriClient(containerd.endpoint)
    try:
        if containerd.version.major >= 2:
            assert client.runtime_config().cgroup_driver == "cgroupfs"
        else:
            with pytest.raises(CriError) as err:
                client.runtime_config()
            assert err.value.code == "UNIMPLEMENTED"
    finally:
        client.close()


def _nano(stats) -> dict[str, tuple[bool, int, int, int]]:
    """container name -> (usage_nano_cores sent?, its value, cumulative ns, timestamp ns)."""
    return {s.attributes.metadata.name: (s.cpu.HasField("usage_nano_cores"), s.cpu.usage_nano_cores.value,
                                         s.cpu.usage_core_nano_seconds.value, s.cpu.timestamp)
            for s in stats}


def test_usage_nano_cores_is_a_delta_since_the_previous_call_of_any_client(tmp_path, runtime_version):
    """The runtime computes usage_nano_cores from the previous stats sample it
    took for the container, whoever asked: the first ListContainerStats after a
    start says 0, the next one the rate between the two calls, and a call from
    another client in between moves the window. Its value therefore depends on
    the other clients' timing (the kubelet's), and the exporter does not export
    it. 1.6 sends it in ContainerStats and per pod too; 1.7 and 2.1 only in
    ListContainerStats."""
    with Containerd(tmp_path / "cd", version=runtime_version) as cd:
        pod = run_pod(cd, "burner")
        pod.add_container("burn", BURN, cpu_quota=10000)
        rt = cd.runtime_stub()

        def listed(stub=rt):
            return _nano(stub.ListContainerStats(api.ListContainerStatsRequest(), timeout=10).stats)["burn"]

        cid = pod.containers["burn"][0]

        def after(sample):
            """The next sample, once the container has used 5 ms of CPU since `sample`, whatever the
            machine's load; waited for on the cgroup file: a stats call would move the window."""
            wait_for(lambda: cgroup_truth.cpu_usage_seconds(pod.uid, cid) * 1e9 > sample[2] + 5_000_000,
                     timeout=30, what="CPU time")
            return listed()

        def rate(new, old) -> float:
            return (new[2] - old[2]) * 1e9 / (new[3] - old[3])

        first = listed()
        assert first[:2] == (True, 0), "the first sample has nothing to compare with"
        second = after(first)
        assert second[0] and second[1] == pytest.approx(rate(second, first), rel=0.01)
        # Another client (its own connection) asks in between: the next value is measured from its sample.
        # The burner is stopped for a second before that call, so the window from `second` holds idle
        # time the window from `theirs` does not: at a steady quota (a CPU hog beside the test gives
        # exactly that) both windows would otherwise show the same rate and could not be told apart.
        pids = [int(p) for p in (cgroup_truth.cgroup_dir("cpuacct", pod.uid, cid) / "cgroup.procs").read_text().split()]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(1.0)  # the idle period itself, not a wait for something
            with grpc.insecure_channel(cd.endpoint) as channel:
                theirs = listed(api_grpc.RuntimeServiceStub(channel))
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        third = after(theirs)
        assert third[1] == pytest.approx(rate(third, theirs), rel=0.01)
        assert third[1] != pytest.approx(rate(third, second), rel=0.01)
        single = rt.ContainerStats(api.ContainerStatsRequest(container_id=cid)).stats
        pods = rt.ListPodSandboxStats(api.ListPodSandboxStatsRequest()).stats
        if runtime_version == "1.6":
            assert single.cpu.HasField("usage_nano_cores") and pods[0].linux.cpu.HasField("usage_nano_cores")
        else:
            assert not single.cpu.HasField("usage_nano_cores") and not pods[0].linux.cpu.HasField("usage_nano_cores")
