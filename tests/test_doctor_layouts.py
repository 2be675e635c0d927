"""Which config file the doctor reads, and where its fixes send the operator,
on the layouts of k3s, RKE2, microk8s, a custom --config and CRI-O flags.

Fixture trees under tests/fixtures/hosts/{k3s,rke2,microk8s} hold the files
those distributions write (containerd's command line in /proc/<pid>/cmdline);
a fake CRI server listens on the layout's socket so the doctor finds it by
probing, as it does on a node. The same on real binaries:
tests/test_doctor_layouts_real.py.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from cri_exporter.cri.client import resolve_endpoint
from cri_exporter.doctor.facts import containerd as cfacts
from cri_exporter.doctor.facts import crio as crio_facts
from cri_exporter.doctor.facts import layouts, systemd
from cri_exporter.hostfs import HostFS
from tests.test_doctor_support import FIXTURES, FakeCriServer, FakeRuntime, results, write

K3S_CONFIG = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"
RKE2_CONFIG = "/var/lib/rancher/rke2/agent/etc/containerd/config.toml"
MICROK8S_CONFIG = "/var/snap/microk8s/7394/args/containerd.toml"
CHECKS = ["containerd.config.parse", "containerd.oom_score_adj", "crictl.endpoint", "containerd.service"]


@pytest.fixture
def short_tmp():
    """A short directory: the layouts' socket paths under it must fit AF_UNIX's 108 bytes."""
    d = tempfile.mkdtemp(prefix="lay-", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def node(name: str, tmp: Path) -> Path:
    root = tmp / name
    shutil.copytree(FIXTURES / name, root, symlinks=True)
    return root


def doctor(root: Path, socket: str, version: str, checks=CHECKS):
    """Run the checks with a fake containerd answering on the layout's socket; no --runtime-endpoint."""
    with FakeCriServer(root / socket.lstrip("/"), FakeRuntime(version=version)):
        endpoint, probed = resolve_endpoint(None, str(root), probe_timeout=2)
        assert probed and endpoint == f"unix://{root}{socket}"
        return results(root, checks=checks)


def test_k3s_reads_the_generated_config_and_fixes_through_a_dropin(short_tmp):
    root = node("k3s", short_tmp)
    r = doctor(root, layouts.K3S_SOCKET, "v2.1.9-k3s1")
    parse = r["containerd.config.parse"].finding
    assert parse.seen.startswith(f"{K3S_CONFIG}: -c {K3S_CONFIG} on the command line of containerd pid 1204; "
                                 "layout k3s, rewritten from the distribution's built-in template at every start")
    # The leftover /etc/containerd/config.toml is not what this containerd reads.
    assert parse.summary == f"{K3S_CONFIG} parses"
    oom = r["containerd.oom_score_adj"]
    assert oom.status.value == "fail" and "containerd pid 1204" in oom.finding.seen
    dropin = "/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.d"
    assert f"{K3S_CONFIG} is rewritten at every start; put the change in a file it imports" in oom.finding.fix
    assert f"mkdir -p {dropin} && cat > {dropin}/90-cri-exporter-doctor.toml" in oom.finding.fix
    assert "[plugins.\"io.containerd.cri.v1.runtime\"]\n  restrict_oom_score_adj = true" in oom.finding.fix
    assert oom.finding.fix.endswith("systemctl restart k3s")
    crictl = r["crictl.endpoint"]
    assert crictl.status.value == "pass", crictl.finding
    assert crictl.finding.summary == ("no /etc/crictl.yaml; k3s's own crictl (k3s crictl) reads "
                                      "/var/lib/rancher/k3s/agent/etc/crictl.yaml")
    assert "layout k3s: containerd on /run/k3s/containerd/containerd.sock" in crictl.finding.seen
    assert r["containerd.service"].finding.summary == "containerd is started by k3s, not by a containerd.service unit"

    # The operator follows the fix: the drop-in is merged (containerd 2.x) and the check passes.
    write(root, f"{dropin}/90-cri-exporter-doctor.toml",
          'version = 3\n[plugins."io.containerd.cri.v1.runtime"]\n  restrict_oom_score_adj = true\n')
    r = doctor(root, layouts.K3S_SOCKET, "v2.1.9-k3s1", ["containerd.oom_score_adj", "containerd.cgroup_driver"])
    assert r["containerd.oom_score_adj"].status.value == "pass"
    assert "SystemdCgroup = true" in r["containerd.cgroup_driver"].finding.seen  # the main file's table survived


def test_k3s_with_a_template_says_to_edit_the_template(short_tmp):
    root = node("k3s", short_tmp)
    template = "/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl"
    write(root, template, '{{ template "base" . }}\n')
    fix = doctor(root, layouts.K3S_SOCKET, "v2.1.9-k3s1")["containerd.oom_score_adj"].finding.fix
    assert fix.startswith(f"In {template} (the template {K3S_CONFIG} is written from at every start: "
                          "edit the template, not the generated file)")
    assert "config-v3.toml.d" not in fix


def test_rke2_template_and_restart(short_tmp):
    root = node("rke2", short_tmp)
    r = doctor(root, layouts.K3S_SOCKET, "v1.7.27-k3s1")
    assert "layout rke2, written from /var/lib/rancher/rke2/agent/etc/containerd/config.toml.tmpl at every start" \
        in r["containerd.config.parse"].finding.seen
    fix = r["containerd.oom_score_adj"].finding.fix
    assert fix.startswith("In /var/lib/rancher/rke2/agent/etc/containerd/config.toml.tmpl")
    assert '[plugins."io.containerd.grpc.v1.cri"]\n  restrict_oom_score_adj = true' in fix  # version 2 names
    assert fix.endswith("systemctl restart rke2-server")
    crictl = r["crictl.endpoint"].finding
    assert "CRI_CONFIG_FILE=/var/lib/rancher/rke2/agent/etc/crictl.yaml /var/lib/rancher/rke2/bin/crictl" in crictl.summary


def test_rke2_without_a_template_copies_the_generated_file_to_one(short_tmp):
    root = node("rke2", short_tmp)
    (root / RKE2_CONFIG.lstrip("/")).with_name("config.toml.tmpl").unlink()
    fix = doctor(root, layouts.K3S_SOCKET, "v1.7.27-k3s1")["containerd.oom_score_adj"].finding.fix
    # containerd 1.x replaces a plugin's whole table with an import's: no drop-in advice.
    assert f"cp {RKE2_CONFIG} /var/lib/rancher/rke2/agent/etc/containerd/config.toml.tmpl" in fix


def test_microk8s_template_through_current(short_tmp):
    root = node("microk8s", short_tmp)
    r = doctor(root, layouts.MICROK8S_SOCKET, "v2.1.3")
    seen = r["containerd.config.parse"].finding.seen
    assert seen.startswith(f"{MICROK8S_CONFIG}: -c {MICROK8S_CONFIG} on the command line of containerd pid 3001; "
                           "layout microk8s, written from /var/snap/microk8s/current/args/containerd-template.toml")
    fix = r["containerd.oom_score_adj"].finding.fix
    assert fix.startswith("In /var/snap/microk8s/current/args/containerd-template.toml")
    assert fix.endswith("microk8s stop && microk8s start")


def test_microk8s_with_containerd_down_reads_the_args_file(short_tmp):
    root = node("microk8s", short_tmp)
    shutil.rmtree(root / "proc/3001")
    endpoint = f"unix://{root}{layouts.MICROK8S_SOCKET}"  # nothing listens: the doctor still names the layout
    loc = cfacts.locate(HostFS(str(root)), [], endpoint[len("unix://"):])
    assert loc.path == "/var/snap/microk8s/current/args/containerd.toml"
    assert loc.how == ("--config in /var/snap/microk8s/current/args/containerd (no containerd process "
                       "serves the endpoint)")
    assert loc.layout.name == "microk8s" and loc.config.exists


def test_the_containerd_behind_the_endpoint_is_chosen_among_several(short_tmp):
    """A k3s node that also runs Docker's containerd on the default socket, and
    a user's process called containerd that names k3s's socket and a config of
    its choosing: it does not own the socket, so it is not the runtime."""
    root = node("k3s", short_tmp)
    write(root, "/proc/900/comm", "containerd\n")
    (root / "proc/900/cmdline").write_bytes(b"/usr/bin/containerd\0")
    write(root, "/proc/1100/comm", "containerd\n")
    write(root, "/proc/1100/status", "Name:\tcontainerd\nUid:\t1000\t1000\t1000\t1000\n")
    (root / "proc/1100/cmdline").write_bytes(b"containerd\0-c\0/etc/shadow\0-a\0/run/k3s/containerd/containerd.sock\0")
    write(root, "/etc/shadow", "root:$6$secret:19000:0:99999:7:::\n")
    r = doctor(root, layouts.K3S_SOCKET, "v2.1.9-k3s1", ["containerd.config.parse"])
    seen = r["containerd.config.parse"].finding.seen
    assert "containerd pid 1204" in seen.splitlines()[0]
    assert "containerd pid 900 serves /run/containerd/containerd.sock, not this endpoint " \
           "(/etc/containerd/config.toml)" in seen
    assert ("containerd pid 1100 (uid 1000) names /run/k3s/containerd/containerd.sock but does not own it: "
            "not the runtime (/etc/shadow ignored)") in seen


def test_relative_config_against_the_process_cwd(tmp_path):
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "kubeadm-containerd-v2", root, symlinks=True)
    (root / "etc/containerd/config.toml").rename(root / "opt/ctd.toml")
    (root / "proc/812/cmdline").write_bytes(b"containerd\0--config=ctd.toml\0")
    os.symlink("/opt", root / "proc/812/cwd")
    loc = cfacts.locate(HostFS(str(root)), [_proc(root, 812)], f"{root}/run/containerd/containerd.sock")
    assert loc.path == "/opt/ctd.toml" and loc.config.exists
    assert "relative -c ctd.toml taken against containerd's working directory /opt" in loc.notes


def _proc(root, pid):
    from cri_exporter.doctor.facts import procfs
    return next(p for p in procfs.find_processes(HostFS(str(root)), ("containerd",)) if p.pid == pid)


def test_containerd_unit_execstart_when_no_process(tmp_path):
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "kubeadm-containerd-v2", root, symlinks=True)
    shutil.rmtree(root / "proc/812")
    (root / "etc/containerd/config.toml").rename(root / "etc/containerd/k8s.toml")
    write(root, "/etc/systemd/system/containerd.service.d/10-config.conf",
          "[Service]\nEnvironment=CONFIG=/etc/containerd/k8s.toml\nExecStart=\nExecStart=/usr/bin/containerd --config ${CONFIG}\n")
    r = results(root, checks=["containerd.config.parse", "containerd.cgroup_driver"])
    assert r["containerd.config.parse"].finding.summary == "/etc/containerd/k8s.toml parses"
    assert ("-c in ExecStart of /etc/systemd/system/containerd.service.d/10-config.conf"
            in r["containerd.config.parse"].finding.seen)
    assert r["containerd.cgroup_driver"].status.value == "pass"


@pytest.mark.parametrize("argv, want", [
    (["-c", "/a.toml"], {"config": "/a.toml"}),
    (["--config=/a.toml", "-a", "/s.sock"], {"config": "/a.toml", "address": "/s.sock"}),
    (["-config", "/a.toml", "--config", "/b.toml"], {"config": "/b.toml"}),  # Go: one dash works, last wins
    (["--log-level", "debug", "-c", "/a.toml"], {"log-level": "debug", "config": "/a.toml"}),
    (["config", "dump", "-c", "/a.toml"], {}),  # flags after a subcommand are the subcommand's
    (["-c", "/a.toml", "--", "-a", "/s"], {"config": "/a.toml"}),
])
def test_containerd_flags_as_go_parses_them(argv, want):
    assert cfacts.parse_args(argv) == want


def test_crio_command_line_names_its_files_and_overrides_them(tmp_path):
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "crio", root, symlinks=True)
    pid = next(p.name for p in (root / "proc").iterdir() if p.name.isdigit())
    write(root, "/etc/crio/k8s.d/10-base.conf", '[crio.runtime]\ncgroup_manager = "systemd"\n')
    write(root, "/etc/crio/k8s.d/20-nested/05-pause.conf", '[crio.image]\npause_image = "registry.k8s.io/pause:3.9"\n')
    write(root, "/etc/crio/k8s.d/30-last.conf", '[crio.image]\npause_image = "registry.k8s.io/pause:3.10"\n')
    (root / f"proc/{pid}/cmdline").write_bytes(
        b"\0".join([b"/usr/bin/crio", b"--config", b"", b"-d", b"/etc/crio/k8s.d", b"--cgroup-manager=cgroupfs"]) + b"\0")
    from cri_exporter.doctor.facts import procfs
    procs = procfs.find_processes(HostFS(str(root)), ("crio",))
    loc = crio_facts.locate(HostFS(str(root)), procs, f"{root}/var/run/crio/crio.sock")
    assert (loc.config_path, loc.dropin_dir) == ("", "/etc/crio/k8s.d")
    # filepath.Walk order: 10-base.conf, 20-nested/05-pause.conf, 30-last.conf; --config "" skips crio.conf
    assert loc.config.files == ["/etc/crio/k8s.d/10-base.conf", "/etc/crio/k8s.d/20-nested/05-pause.conf",
                                "/etc/crio/k8s.d/30-last.conf"]
    assert loc.config.get("crio.image", "pause_image") == ("registry.k8s.io/pause:3.10", "/etc/crio/k8s.d/30-last.conf")
    assert loc.config.get("crio.runtime", "cgroup_manager") == (
        "cgroupfs", f"--cgroup-manager on the command line of crio pid {pid}")


def test_crio_unit_with_environment_file(tmp_path):
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "crio", root, symlinks=True)
    for p in (root / "proc").iterdir():
        if p.name.isdigit():
            shutil.rmtree(p)
    write(root, "/usr/lib/systemd/system/crio.service",
          "[Service]\nEnvironmentFile=-/etc/sysconfig/crio\n"
          "ExecStart=/usr/bin/crio $CRIO_CONFIG_OPTIONS $CRIO_RUNTIME_OPTIONS\n")
    write(root, "/etc/sysconfig/crio", 'CRIO_CONFIG_OPTIONS="--config-dir /etc/crio/site.d"\nCRIO_RUNTIME_OPTIONS=\n')
    write(root, "/etc/crio/site.d/01.conf", '[crio.runtime]\nconmon_cgroup = "pod"\n')
    unit = systemd.read_unit(HostFS(str(root)), "crio.service")
    assert systemd.exec_start(HostFS(str(root)), unit) == ["/usr/bin/crio", "--config-dir", "/etc/crio/site.d"]
    loc = crio_facts.locate(HostFS(str(root)), [], None)
    assert loc.how == "ExecStart of /usr/lib/systemd/system/crio.service"
    assert loc.config.get("crio.runtime", "conmon_cgroup") == ("pod", "/etc/crio/site.d/01.conf")


def test_no_runtime_answering_the_only_containerd_process_is_read(short_tmp):
    """Nothing answers on any socket (the probe falls back to containerd's
    default path, which does not exist): the only containerd process is k3s's."""
    root = node("k3s", short_tmp)
    r = results(root, checks=["containerd.config.parse"])["containerd.config.parse"].finding
    assert r.summary == f"{K3S_CONFIG} parses"
    assert ("no socket at the endpoint: the only containerd process (it listens on "
            "/run/k3s/containerd/containerd.sock)") in r.seen
