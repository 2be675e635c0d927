"""Bridge netfilter (br_netfilter, bridge-nf-call-*) is critical only where the
CNI puts pods on a Linux bridge AND kube-proxy runs in iptables or ipvs mode;
kube-proxy's mode is read as kube-proxy settles it (its --config file through
/proc/<pid>/root replaces the flags; an empty mode is iptables)."""
import os
import shutil

import pytest

from tests.test_doctor_kubelet_layouts import healthy_run_root
from tests.test_doctor_support import copy_fixture, results, write

from cri_exporter.doctor.facts import kube_proxy
from cri_exporter.hostfs import HostFS

BRIDGE_CHECKS = ["kernel.module.br_netfilter", "kernel.sysctl.bridge_nf_call_iptables",
                 "kernel.sysctl.bridge_nf_call_ip6tables"]
PID = 1377  # the fixture's kube-proxy (kubeadm's DaemonSet: --config=/var/lib/kube-proxy/config.conf)
CONFIG = f"/proc/{PID}/root/var/lib/kube-proxy/..2026_11_30_08_12_44.1938507012/config.conf"


def _without_br_netfilter(tmp_path):
    """kubeadm-containerd-v2 (10-bridge.conflist: the bridge plugin) without br_netfilter."""
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    modules = root / "proc/modules"
    modules.write_text("".join(line + "\n" for line in modules.read_text().splitlines() if not line.startswith("br_netfilter")))
    shutil.rmtree(root / "proc/sys/net/bridge")  # br_netfilter registers the directory
    return root


def _mode(root, mode: str):
    cfg = root / CONFIG.lstrip("/")
    cfg.write_text(cfg.read_text().replace('mode: ""', f"mode: {mode}"))


def _argv(root, *args: str):
    (root / f"proc/{PID}/cmdline").write_text("".join(a + "\0" for a in ("/usr/local/bin/kube-proxy",) + args))


def _statuses(root):
    r = results(root, checks=BRIDGE_CHECKS)
    return [r[c].status.value for c in BRIDGE_CHECKS], r["kernel.module.br_netfilter"].finding


def test_iptables_mode_by_default_fails_without_br_netfilter(tmp_path):
    root = _without_br_netfilter(tmp_path)
    got, f = _statuses(root)  # mode: "" in the ConfigMap kubeadm writes
    assert got == ["fail", "fail", "warn"]
    assert "kube-proxy runs in iptables mode" in f.seen
    assert "mode: '' in --config=/var/lib/kube-proxy/config.conf" in f.seen and "empty means iptables" in f.seen
    assert any("pkg/proxy/iptables/proxier.go" in r for r in f.refs)


def test_ipvs_mode_fails_without_br_netfilter(tmp_path):
    root = _without_br_netfilter(tmp_path)
    _mode(root, "ipvs")
    got, f = _statuses(root)
    assert got == ["fail", "fail", "warn"] and "kube-proxy runs in ipvs mode" in f.seen


def test_nftables_mode_does_not_need_bridge_netfilter(tmp_path):
    root = _without_br_netfilter(tmp_path)
    _mode(root, "nftables")
    got, f = _statuses(root)
    assert got == ["skip", "skip", "skip"]
    assert "nftables mode" in f.summary and "nftables/proxier.go" in " ".join(f.refs)


def test_the_config_file_replaces_the_proxy_mode_flag(tmp_path):
    root = _without_br_netfilter(tmp_path)
    # kube-proxy ignores --proxy-mode when --config is given (Options.Complete): still iptables.
    _argv(root, "--config=/var/lib/kube-proxy/config.conf", "--proxy-mode=nftables")
    assert _statuses(root)[0] == ["fail", "fail", "warn"]
    _argv(root, "--proxy-mode", "nftables")  # no --config: the flag decides
    got, f = _statuses(root)
    assert got == ["skip", "skip", "skip"] and "--proxy-mode=nftables" in f.seen
    _argv(root, "--v=2")  # neither: the default
    got, f = _statuses(root)
    assert got == ["fail", "fail", "warn"] and "no --proxy-mode and no --config" in f.seen


def test_no_kube_proxy_at_all_is_not_critical(tmp_path):
    root = _without_br_netfilter(tmp_path)
    shutil.rmtree(root / f"proc/{PID}")  # Cilium / kube-router replace it
    got, f = _statuses(root)
    assert got == ["skip", "skip", "skip"] and "no kube-proxy process runs" in f.summary


def test_unknown_mode_is_a_warning_that_says_so(tmp_path):
    root = _without_br_netfilter(tmp_path)
    shutil.rmtree(root / f"proc/{PID}/root")  # no ptrace rights: /proc/<pid>/root unreadable
    got, f = _statuses(root)
    assert got == ["warn", "warn", "warn"]
    assert "kube-proxy's mode is unknown" in f.seen and "could not be read through /proc/1377/root" in f.seen
    assert "judged as a warning, not a failure" in f.seen


def test_no_visible_processes_is_an_unknown_mode(tmp_path):
    root = _without_br_netfilter(tmp_path)
    for entry in os.listdir(root / "proc"):
        if entry.isdigit():
            shutil.rmtree(root / "proc" / entry)
    got, f = _statuses(root)
    assert got == ["warn", "warn", "warn"] and "no process is visible under /proc" in f.seen


def test_a_bad_mode_or_config_is_unknown_never_a_traceback(tmp_path):
    root = _without_br_netfilter(tmp_path)
    _mode(root, "userspace")  # removed from kube-proxy in 1.26
    assert _statuses(root)[0] == ["warn", "warn", "warn"]
    (root / CONFIG.lstrip("/")).write_text("mode: [\n")
    got, f = _statuses(root)
    assert got == ["warn", "warn", "warn"] and "is not YAML" in f.seen


def test_the_config_is_read_inside_the_process_root(tmp_path):
    root = _without_br_netfilter(tmp_path)
    # An absolute link in the container resolves in the container's root, not the host's.
    write(root, f"/proc/{PID}/root/etc/kp.conf", "mode: nftables\n")
    write(root, "/etc/kp.conf", "mode: ipvs\n")
    os.symlink("/etc/kp.conf", root / f"proc/{PID}/root/var/lib/kube-proxy/abs.conf")
    _argv(root, "--config=/var/lib/kube-proxy/abs.conf")
    mode = kube_proxy.read(HostFS(str(root)))
    assert (mode.state, mode.mode) == ("running", "nftables")


@pytest.mark.parametrize("variant", ["nftables", "no-kube-proxy"])
def test_healthy_node_without_bridge_netfilter_raises_no_warning(variant, tmp_path):
    root = _without_br_netfilter(tmp_path)
    if variant == "nftables":
        _mode(root, "nftables")
    else:
        shutil.rmtree(root / f"proc/{PID}")
    _, r = healthy_run_root(root, "v1.7.22", None)
    bad = {k: (v.status.value, v.finding.summary) for k, v in r.items() if v.status.value in ("warn", "fail")}
    assert bad == {}
    assert {r[c].status.value for c in BRIDGE_CHECKS} == {"skip"}


def test_k3s_runs_kube_proxy_in_its_own_process(tmp_path):
    root = copy_fixture("k3s-healthy", tmp_path)
    mode = kube_proxy.read(HostFS(str(root)))
    assert (mode.state, mode.mode) == ("running", "iptables") and "k3s runs kube-proxy" in mode.seen
    cfg = root / "etc/rancher/k3s/config.yaml"
    cfg.write_text(cfg.read_text() + "kube-proxy-arg:\n  - proxy-mode=nftables\n")
    assert kube_proxy.read(HostFS(str(root))).mode == "nftables"
    cfg.write_text(cfg.read_text() + "disable-kube-proxy: true\n")
    assert kube_proxy.read(HostFS(str(root))).state == "absent"
