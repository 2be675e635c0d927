"""kernel.* checks over fixture host trees: each passes on a healthy node
and fails the way the kubeadm/container-runtime docs describe."""
import shutil

import pytest

try:
    from tests.test_doctor_support import copy_fixture, fixture, results, status, write
except ImportError:  # rootdir-less import mode
    from test_doctor_support import copy_fixture, fixture, results, status, write

HEALTHY = fixture("kubeadm-containerd-v2")
BROKEN = fixture("kubeadm-containerd-broken")


@pytest.mark.parametrize("check_id,healthy,broken", [
    ("kernel.module.br_netfilter", "pass", "fail"),
    ("kernel.module.overlay", "pass", "fail"),
    ("kernel.sysctl.ip_forward", "pass", "fail"),
    ("kernel.sysctl.bridge_nf_call_iptables", "pass", "fail"),
    ("kernel.sysctl.bridge_nf_call_ip6tables", "pass", "warn"),
    ("kernel.swap", "pass", "fail"),
    ("kernel.cgroup.version", "pass", "warn"),
    ("kernel.cgroup.controllers", "pass", "fail"),
    ("kernel.conntrack", "pass", "fail"),
    ("kernel.inotify", "pass", "warn"),
])
def test_kernel_check_passes_on_healthy_and_fails_on_broken_node(check_id, healthy, broken):
    assert status(HEALTHY, check_id) == healthy
    assert status(BROKEN, check_id) == broken


def test_findings_on_broken_node_say_what_was_seen_and_how_to_fix():
    r = results(BROKEN, checks=["kernel"])
    swap = r["kernel.swap"].finding
    assert "/swap.img" in swap.seen and "failSwapOn" in swap.seen
    assert "swapoff -a" in swap.fix and swap.refs
    assert "memory" in r["kernel.cgroup.controllers"].finding.summary
    assert "net.ipv4.ip_forward = 0" in r["kernel.sysctl.ip_forward"].finding.summary
    for res in r.values():
        if res.status.value in ("warn", "fail"):
            assert res.finding.seen and res.finding.why and res.finding.fix and res.finding.refs, res.id


def test_swap_is_fine_when_the_kubelet_allows_it(tmp_path):
    root = copy_fixture("kubeadm-containerd-broken", tmp_path)
    cfg = root / "var/lib/kubelet/config.yaml"
    cfg.write_text(cfg.read_text() + "failSwapOn: false\n")
    assert status(root, "kernel.swap") == "pass"


def test_swap_flag_wins_over_config_file(tmp_path):
    root = copy_fixture("kubeadm-containerd-broken", tmp_path)
    write(root, "/etc/default/kubelet", "KUBELET_EXTRA_ARGS=--fail-swap-on=false\n")
    assert status(root, "kernel.swap") == "pass"


def test_cgroup_v1_with_fail_cgroup_v1_true_fails(tmp_path):
    root = copy_fixture("kubeadm-containerd-broken", tmp_path)
    cfg = root / "var/lib/kubelet/config.yaml"
    cfg.write_text(cfg.read_text() + "failCgroupV1: true\n")
    assert status(root, "kernel.cgroup.version") == "fail"


def test_modules_seen_through_sys_module_and_modules_builtin(tmp_path):
    root = copy_fixture("kubeadm-containerd-broken", tmp_path)
    write(root, "/sys/module/br_netfilter/refcnt", "0\n")
    write(root, "/lib/modules/5.10.0-raspi/modules.builtin", "kernel/fs/overlayfs/overlay.ko\n")
    r = results(root, checks=["kernel.module"])
    assert r["kernel.module.br_netfilter"].status.value == "pass"
    assert r["kernel.module.overlay"].finding.summary == "overlay is builtin"


IPVS_LOADED = "".join(f"{m} 1 0 - Live 0x0\n" for m in ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh"))
# kubeadm-containerd-v2's kube-proxy (kubeadm's DaemonSet), whose config.conf says mode: ""
PROXY_PID = 1377
PROXY_CONFIG = f"proc/{PROXY_PID}/root/var/lib/kube-proxy/..2026_11_30_08_12_44.1938507012/config.conf"


def _proxy_mode(root, mode: str):
    cfg = root / PROXY_CONFIG
    assert 'mode: ""' in cfg.read_text()
    cfg.write_text(cfg.read_text().replace('mode: ""', f"mode: {mode}"))


def _ipvs(root):
    return results(root, checks=["kernel.module.ipvs"])["kernel.module.ipvs"]


def test_ipvs_mode_with_the_modules_loaded_passes(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    _proxy_mode(root, "ipvs")
    (root / "proc/modules").write_text((root / "proc/modules").read_text() + IPVS_LOADED)
    r = _ipvs(root)
    assert r.status.value == "pass" and "kube-proxy runs in ipvs mode" in r.finding.seen


def test_ipvs_mode_without_the_modules_fails_without_kube_ipvs0(tmp_path):
    """kube-proxy's mode alone settles it: no kube-ipvs0 yet (the proxier did not get that far)."""
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    _proxy_mode(root, "ipvs")
    assert not (root / "sys/class/net/kube-ipvs0").exists()
    r = _ipvs(root)
    assert r.status.value == "fail" and "ip_vs, ip_vs_rr, ip_vs_wrr, ip_vs_sh not loaded" in r.finding.summary
    assert "mode: 'ipvs' in --config=/var/lib/kube-proxy/config.conf" in r.finding.seen
    assert "modprobe ip_vs_sh" in r.finding.fix and r.finding.refs


@pytest.mark.parametrize("mode", ['""', "iptables", "nftables"])
def test_iptables_or_nftables_mode_skips_even_with_a_leftover_kube_ipvs0(tmp_path, mode):
    """kube-proxy leaves kube-ipvs0 behind when switched out of IPVS mode:
    its running mode wins over the interface."""
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    _proxy_mode(root, mode)
    write(root, "/sys/class/net/kube-ipvs0/mtu", "1500\n")
    r = _ipvs(root)
    want = "iptables" if mode == '""' else mode
    assert r.status.value == "skip" and r.finding.summary == f"kube-proxy runs in {want} mode, not IPVS"
    assert f"kube-proxy runs in {want} mode" in r.finding.seen


def test_mode_unknown_falls_back_on_kube_ipvs0(tmp_path):
    """kube-proxy's --config unreadable (no ptrace rights): kube-ipvs0 is the evidence, as before."""
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    (root / PROXY_CONFIG).unlink()
    r = _ipvs(root)
    assert r.status.value == "skip" and "unknown" in r.finding.summary
    write(root, "/sys/class/net/kube-ipvs0/mtu", "1500\n")
    r = _ipvs(root)
    assert r.status.value == "fail" and "ip_vs" in r.finding.summary
    assert "kube-ipvs0 exists" in r.finding.seen and "could not be read" in r.finding.seen
    (root / "proc/modules").write_text((root / "proc/modules").read_text() + IPVS_LOADED)
    assert status(root, "kernel.module.ipvs") == "pass"


def test_no_kube_proxy_but_kube_ipvs0_still_checks(tmp_path):
    """No kube-proxy process right now (one in IPVS mode missing its modules
    exits and restarts): kube-ipvs0 keeps the finding; without it, a skip."""
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    shutil.rmtree(root / f"proc/{PROXY_PID}")
    r = _ipvs(root)
    assert r.status.value == "skip" and r.finding.summary == "no kube-proxy runs here"
    write(root, "/sys/class/net/kube-ipvs0/mtu", "1500\n")
    assert status(root, "kernel.module.ipvs") == "fail"


def test_conntrack_near_full_warns_and_missing_module_skips(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    write(root, "/proc/sys/net/netfilter/nf_conntrack_count", "210000\n")
    assert status(root, "kernel.conntrack") == "warn"
    (root / "proc/sys/net/netfilter/nf_conntrack_count").unlink()
    assert status(root, "kernel.conntrack") == "skip"


def test_cgroup_v1_controllers_from_proc_cgroups_when_enabled(tmp_path):
    root = copy_fixture("kubeadm-containerd-broken", tmp_path)
    text = (root / "proc/cgroups").read_text().replace("memory\t0\t70\t0", "memory\t4\t70\t1")
    (root / "proc/cgroups").write_text(text)
    assert status(root, "kernel.cgroup.controllers") == "pass"


def _without_br_netfilter(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    modules = root / "proc/modules"
    modules.write_text("".join(line + "\n" for line in modules.read_text().splitlines() if not line.startswith("br_netfilter")))
    for name in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
        (root / "proc/sys/net/bridge" / name).unlink()
    (root / "proc/sys/net/bridge").rmdir()  # br_netfilter registers the directory
    return root


BRIDGE_CHECKS = ["kernel.module.br_netfilter", "kernel.sysctl.bridge_nf_call_iptables",
                 "kernel.sysctl.bridge_nf_call_ip6tables"]


def test_bridge_netfilter_only_matters_with_a_linux_bridge_cni(tmp_path):
    root = _without_br_netfilter(tmp_path)
    r = results(root, checks=BRIDGE_CHECKS)  # 10-bridge.conflist: the bridge plugin
    assert [r[c].status.value for c in BRIDGE_CHECKS] == ["fail", "fail", "warn"]
    assert "puts pods on a Linux bridge (bridge)" in r["kernel.module.br_netfilter"].finding.seen
    (root / "etc/cni/net.d/10-bridge.conflist").unlink()
    write(root, "/etc/cni/net.d/05-cilium.conflist",
          '{"cniVersion":"0.3.1","name":"cilium","plugins":[{"type":"cilium-cni","enable-debug":false}]}')
    r = results(root, checks=BRIDGE_CHECKS)  # kubeadm dropped this preflight (kubernetes PR 123464)
    assert {r[c].status.value for c in BRIDGE_CHECKS} == {"skip"}
    assert "puts pods on no Linux bridge" in r["kernel.module.br_netfilter"].finding.summary
    (root / "etc/cni/net.d/05-cilium.conflist").unlink()
    r = results(root, checks=BRIDGE_CHECKS)  # no CNI config yet: cannot tell, so no failure
    assert {r[c].status.value for c in BRIDGE_CHECKS} == {"warn"}
