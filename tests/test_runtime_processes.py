"""The runtime process reader's parsing and choices, on fixture /proc trees of
layouts the lab cannot run (k3s's embedded containerd beside docker's, CRI-O).
The real containerd is in test_runtime_processes_real.py."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from cri_exporter.collectors.runtime_processes import leaked_shims
from cri_exporter.hostfs import HostFS
from cri_exporter.runtime_processes import (
    CLK_TCK, PAGE_SIZE, ProcessInfo, RuntimeProcesses, RuntimeProcessSampler, RuntimeSample, flag_values,
    host_socket, normalize_socket, parse_soft_nofile, parse_stat,
)

BTIME = 1_700_000_000


def stat_line(pid, comm, state="S", ppid=1, utime=0, stime=0, threads=1, start=100, rss=10) -> str:
    f = [state, ppid, 0, 0, 0, 0, 0, 0, 0, 0, 0, utime, stime, 0, 0, 20, 0, threads, 0, start, 0, rss]
    return f"{pid} ({comm}) " + " ".join(map(str, f)) + " 0 0 0\n"


class FakeProc:
    def __init__(self, root: Path):
        self.root = root
        (root / "proc").mkdir(parents=True)
        (root / "proc" / "stat").write_text(f"cpu 1 2 3\nbtime {BTIME}\n")

    def add(self, pid, argv, comm=None, fds=3, nofile=1024, uid=None, nspid=None, **stat):
        d = self.root / "proc" / str(pid)
        (d / "fd").mkdir(parents=True)
        comm = comm or os.path.basename(argv[0])[:15] if argv else comm
        (d / "stat").write_text(stat_line(pid, comm, **stat))
        (d / "comm").write_text(f"{comm}\n")
        uid = os.geteuid() if uid is None else uid
        nspid = "\t".join(map(str, nspid or [pid]))
        (d / "status").write_text(f"Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nNSpid:\t{nspid}\n")
        (d / "statm").write_text(f"100 {stat.get('rss', 10)} 5 1 0 50 0\n")
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + (b"\0" if argv else b""))
        (d / "limits").write_text(
            "Limit                     Soft Limit           Hard Limit           Units     \n"
            f"Max open files            {nofile}                 524288               files     \n")
        for i in range(fds):
            (d / "fd" / str(i)).write_text("")

    def socket(self, path: str) -> None:
        p = self.root / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
        s.close()


K3S_SOCK = "/run/k3s/containerd/containerd.sock"
RUNC = "/var/lib/rancher/k3s/data/abc/bin/containerd-shim-runc-v2"


@pytest.fixture
def k3s_node(tmp_path):
    """k3s's containerd (a child of k3s, flags on its command line) beside
    docker's own containerd and its shim in the moby namespace."""
    proc = FakeProc(tmp_path)
    proc.socket(K3S_SOCK)
    proc.socket("/run/containerd/containerd.sock")
    proc.add(100, ["/usr/local/bin/k3s", "server"], comm="k3s-server")
    proc.add(200, ["containerd", "-c", "/var/lib/rancher/k3s/agent/etc/containerd/config.toml", "-a", K3S_SOCK,
                   "--state", "/run/k3s/containerd", "--root", "/var/lib/rancher/k3s/agent/containerd"],
             ppid=100, utime=300, stime=100, threads=40, start=500, rss=2000, fds=7, nofile=1048576)
    proc.add(300, ["/usr/bin/containerd"], utime=50, start=200)  # docker's, default socket
    for pid, sandbox in ((400, "sb-a"), (500, "sb-gone")):
        proc.add(pid, [RUNC, "-namespace", "k8s.io", "-id", sandbox, "-address", K3S_SOCK],
                 comm="containerd-shim", utime=10, threads=11, start=1000, rss=1500, fds=4)
    proc.add(401, ["/pause"], ppid=400)
    proc.add(402, ["sh"], ppid=400)
    proc.add(403, [], comm="sleep", state="Z", ppid=402)  # a zombie's cmdline is empty
    # a user's process posing as a shim of k3s's containerd, and as the daemon
    proc.add(700, ["/tmp/containerd-shim-evil", "-namespace", "k8s.io", "-id", "x", "-address", K3S_SOCK],
             comm="containerd-shim", uid=1000, start=2000)
    proc.add(701, ["containerd", "-a", K3S_SOCK], uid=1000, start=3000)
    proc.add(600, ["/usr/bin/containerd-shim-runc-v2", "-namespace", "moby", "-id", "x",
                   "-address", "/run/containerd/containerd.sock"], comm="containerd-shim")
    return tmp_path


def test_k3s_embedded_containerd(k3s_node):
    reader = RuntimeProcesses(HostFS(str(k3s_node)), lambda: f"unix://{k3s_node}{K3S_SOCK}")
    sample = reader.read()
    d = sample.daemon
    assert (d.pid, d.name, d.threads, d.open_fds, d.max_fds) == (200, "containerd", 40, 7, 1048576)
    assert d.cpu_seconds == 400 / CLK_TCK
    assert d.resident_bytes == 2000 * PAGE_SIZE
    assert d.start_time_seconds == BTIME + 500 / CLK_TCK
    assert sorted((s.pid, s.name, s.id) for s in sample.shims) == [
        (400, "containerd-shim-runc-v2", "sb-a"), (500, "containerd-shim-runc-v2", "sb-gone")]
    assert sample.zombies == {"containerd-shim-runc-v2": 1, "containerd": 0}


def test_dockers_containerd_is_another_runtime(k3s_node):
    reader = RuntimeProcesses(HostFS(str(k3s_node)), lambda: f"unix://{k3s_node}/var/run/containerd/containerd.sock")
    sample = reader.read()
    assert sample.daemon.pid == 300
    assert [(s.pid, s.namespace) for s in sample.shims] == [(600, "moby")]


def test_leaked_shims_compare_with_cri_and_skip_other_namespaces(k3s_node):
    reader = RuntimeProcesses(HostFS(str(k3s_node)), lambda: f"unix://{k3s_node}{K3S_SOCK}")
    sample = reader.read()
    now = BTIME + 1000 / CLK_TCK + 600
    assert leaked_shims(sample, {"sb-a"}, reader.alive, now) == {"containerd-shim-runc-v2": 1}
    assert leaked_shims(sample, {"sb-a", "sb-gone"}, reader.alive, now) == {"containerd-shim-runc-v2": 0}
    # younger than the grace: a sandbox CRI does not list yet
    assert leaked_shims(sample, {"sb-a"}, reader.alive, BTIME + 1000 / CLK_TCK + 60) == {"containerd-shim-runc-v2": 0}
    # gone since the walk (its pod was removed meanwhile): not leaked
    (k3s_node / "proc" / "500" / "stat").unlink()
    assert leaked_shims(sample, {"sb-a"}, reader.alive, now) == {"containerd-shim-runc-v2": 0}
    docker = RuntimeProcesses(HostFS(str(k3s_node)), lambda: f"unix://{k3s_node}/run/containerd/containerd.sock")
    assert leaked_shims(docker.read(), set(), docker.alive, now) == {"containerd-shim-runc-v2": 0}


def test_a_kind_nodes_containerd_is_not_the_hosts(tmp_path):
    """A kind node's containerd and shims name /run/containerd/containerd.sock
    too (in the node container's mount namespace); they live in a nested pid
    namespace (NSpid has two pids) and are neither the daemon nor its shims."""
    proc = FakeProc(tmp_path)
    proc.socket("/run/containerd/containerd.sock")
    proc.add(10, ["/usr/bin/containerd"], start=100)
    proc.add(20, ["/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "host-pod",
                  "-address", "/run/containerd/containerd.sock"], comm="containerd-shim")
    proc.add(30, ["/usr/local/bin/containerd"], nspid=[30, 120], start=900)  # newer: would win
    proc.add(40, ["/usr/local/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "kind-pod",
                  "-address", "/run/containerd/containerd.sock"], comm="containerd-shim", nspid=[40, 300])
    sample = RuntimeProcesses(HostFS(str(tmp_path)), lambda: f"unix://{tmp_path}/run/containerd/containerd.sock").read()
    assert sample.daemon.pid == 10
    assert [s.id for s in sample.shims] == ["host-pod"]
    # the doctor's containerd.locate, the same reader, takes the same one and says why not the other
    from cri_exporter.doctor.facts import containerd as cfacts
    from cri_exporter.doctor.facts import procfs
    hostfs = HostFS(str(tmp_path))
    loc = cfacts.locate(hostfs, procfs.find_processes(hostfs, ("containerd",)),
                        f"{tmp_path}/run/containerd/containerd.sock", "v2.1.9")
    assert loc.process.pid == 10
    import shutil
    shutil.rmtree(tmp_path / "proc" / "10")  # the host's containerd down: the kind node's is still not it
    assert RuntimeProcesses(hostfs, lambda: f"unix://{tmp_path}/run/containerd/containerd.sock").read().daemon is None
    loc = cfacts.locate(hostfs, procfs.find_processes(hostfs, ("containerd",)),
                        f"{tmp_path}/run/containerd/containerd.sock", "v2.1.9")
    assert loc.process is None
    assert loc.others == ["containerd pid 30 (in a nested pid namespace) serves /run/containerd/containerd.sock, "
                          "not this endpoint (/etc/containerd/config.toml)"]


def test_crio_and_conmon(tmp_path):
    proc = FakeProc(tmp_path)
    proc.socket("/run/crio/crio.sock")
    proc.add(10, ["/usr/bin/crio"], threads=30)
    proc.add(20, ["/usr/bin/conmon", "-b", "/run/containers/storage/x", "-c", "ctr1", "-u", "ctr1", "-r", "/usr/bin/runc"])
    sample = RuntimeProcesses(HostFS(str(tmp_path)), lambda: f"unix://{tmp_path}/var/run/crio/crio.sock").read()
    assert sample.daemon.name == "crio" and sample.daemon.threads == 30
    assert [(s.name, s.id) for s in sample.shims] == [("conmon", "ctr1")]


def test_cri_dockerd(tmp_path):
    """cri-dockerd serves CRI; the shims are docker's containerd's (its -address), not counted."""
    proc = FakeProc(tmp_path)
    proc.socket("/run/cri-dockerd.sock")
    proc.socket("/run/containerd/containerd.sock")
    proc.add(10, ["/usr/bin/cri-dockerd", "--container-runtime-endpoint", "fd://"], threads=12)
    proc.add(11, ["/usr/bin/cri-dockerd"], threads=13, start=200)
    proc.add(20, ["/usr/bin/containerd-shim-runc-v2", "-namespace", "moby", "-id", "x",
                  "-address", "/run/containerd/containerd.sock"], comm="containerd-shim")
    sample = RuntimeProcesses(HostFS(str(tmp_path)), lambda: f"unix://{tmp_path}/var/run/cri-dockerd.sock").read()
    assert (sample.daemon.pid, sample.daemon.name) == (11, "cri-dockerd")
    assert sample.shims == ()


def test_no_runtime_process(tmp_path):
    FakeProc(tmp_path)
    sample = RuntimeProcesses(HostFS(str(tmp_path)), lambda: "unix:///run/containerd/containerd.sock").read()
    assert sample.daemon is None and sample.shims == ()


def test_shim_cpu_never_goes_down_when_shims_exit():
    def shim(pid, cpu):
        return ProcessInfo(pid, "containerd-shim-runc-v2", cpu, 0, 1, 0.0, 1, None, "k8s.io", str(pid), pid)

    walks = iter([(shim(1, 5.0), shim(2, 3.0)), (shim(1, 6.0),), (shim(1, 6.5), shim(3, 1.0))])

    class Reader:
        def read(self):
            return RuntimeSample(0.0, 0.0, 0, None, next(walks))

    sampler = RuntimeProcessSampler(Reader(), 15)
    totals = []
    for _ in range(3):
        sampler.sample()
        totals.append(sampler.latest.shim_cpu_seconds["containerd-shim-runc-v2"])
    assert totals == [8.0, 9.0, 10.5]  # shim 2 exits: nothing taken away; shim 3 counted whole


def test_parsers():
    st = parse_stat(7, stat_line(7, "a) (b", state="Z", ppid=3, utime=2, stime=3, threads=4, start=5, rss=6))
    assert (st.comm, st.state, st.ppid, st.cpu_ticks, st.threads, st.start_ticks, st.rss_pages) == \
        ("a) (b", "Z", 3, 5, 4, 5, 6)
    assert flag_values(["x", "-a", "/s"], "-a", "--address") == "/s"
    assert flag_values(["x", "--address=/t"], "-a", "--address") == "/t"
    assert flag_values(["x", "-a"], "-a") is None
    assert parse_soft_nofile("Max open files            unlimited            unlimited            files") is None
    assert normalize_socket("unix:///var/run/crio/crio.sock") == "/run/crio/crio.sock"
    assert host_socket("unix:///host/run/x.sock", HostFS("/host")) == "/run/x.sock"
    assert host_socket("unix:///run/x.sock", HostFS("/")) == "/run/x.sock"


def test_daemon_found_through_config_imports_as_the_doctor_finds_it(tmp_path):
    """The socket set in a file the config imports, under a relative -c: the
    sampler and the doctor's containerd.locate name the same process (one
    reader, doctor/facts/runtime_daemon.py)."""
    from cri_exporter.doctor.facts import containerd as cfacts
    from cri_exporter.doctor.facts import procfs

    proc = FakeProc(tmp_path)
    sock = "/run/k8s/containerd.sock"
    proc.socket(sock)
    proc.socket("/run/containerd/containerd.sock")
    etc = tmp_path / "etc" / "k8s-containerd"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "config.toml").write_text('version = 2\nimports = ["conf.d/*.toml"]\n')
    (etc / "conf.d" / "grpc.toml").write_text(f'[grpc]\naddress = "{sock}"\n')
    proc.add(10, ["/usr/bin/containerd"], start=100)  # the default socket's
    proc.add(20, ["/usr/bin/containerd", "--config", "/etc/k8s-containerd/config.toml"], start=50)
    hostfs = HostFS(str(tmp_path))
    sample = RuntimeProcesses(hostfs, lambda: f"unix://{tmp_path}{sock}").read()
    assert sample.daemon is not None and sample.daemon.pid == 20
    doctor = cfacts.locate(hostfs, procfs.find_processes(hostfs, ("containerd",)), f"{tmp_path}{sock}", "v1.7.24")
    assert doctor.process is not None and doctor.process.pid == sample.daemon.pid
    default = RuntimeProcesses(hostfs, lambda: f"unix://{tmp_path}/run/containerd/containerd.sock").read()
    assert default.daemon.pid == 10


def test_crio_listen_from_a_dropin(tmp_path):
    """CRI-O's [crio.api] listen in a drop-in, read as the doctor reads CRI-O's files."""
    proc = FakeProc(tmp_path)
    proc.socket("/run/crio/crio.sock")
    proc.socket("/run/other/crio.sock")
    (tmp_path / "etc" / "crio" / "crio.conf.d").mkdir(parents=True)
    (tmp_path / "etc" / "crio" / "crio.conf.d" / "10-listen.conf").write_text('[crio.api]\nlisten = "/run/other/crio.sock"\n')
    proc.add(10, ["/usr/bin/crio"])
    proc.add(11, ["/usr/bin/crio", "--config-dir", "/nonexistent"], start=50)
    hostfs = HostFS(str(tmp_path))
    assert RuntimeProcesses(hostfs, lambda: f"unix://{tmp_path}/run/other/crio.sock").read().daemon.pid == 10
    assert RuntimeProcesses(hostfs, lambda: f"unix://{tmp_path}/run/crio/crio.sock").read().daemon.pid == 11


def test_shim_leak_grace_flag_reaches_the_collector(k3s_node):
    """--runtime-shim-leak-grace (a kubelet with a long runtimeRequestTimeout):
    a shim CRI does not list, 10 minutes old, is not leaked under a 20-minute grace."""
    from click.testing import CliRunner

    from cri_exporter.cli import serve
    from cri_exporter.collectors.registry import Parts, _runtime_processes
    from cri_exporter.settings import Settings

    class Client:
        endpoint = f"unix://{k3s_node}{K3S_SOCK}"

    settings = Settings(collectors=("runtime_processes",), runtime_shim_leak_grace=1200.0)
    parts = Parts.build(settings, Client(), HostFS(str(k3s_node)), None)
    collector = _runtime_processes(parts)
    assert collector.leak_grace == 1200.0
    reader = RuntimeProcesses(HostFS(str(k3s_node)), lambda: f"unix://{k3s_node}{K3S_SOCK}")
    now = BTIME + 1000 / CLK_TCK + 600
    assert leaked_shims(reader.read(), {"sb-a"}, reader.alive, now, collector.leak_grace) == {"containerd-shim-runc-v2": 0}
    assert _runtime_processes(Parts.build(Settings(collectors=("runtime_processes",)), Client(), HostFS(str(k3s_node)),
                                          None)).leak_grace == 120.0
    bad = CliRunner().invoke(serve, ["--runtime-shim-leak-grace", "-5"])
    assert bad.exit_code == 2 and "--runtime-shim-leak-grace" in bad.output and "Traceback" not in bad.output
