"""Kernel prerequisites of a Kubernetes node (what kubeadm preflight and the
"Container Runtimes" page ask for), read from /proc and /sys."""
from __future__ import annotations

import dataclasses

from cri_exporter.doctor.facts import procfs
from cri_exporter.doctor.model import Severity, Status, failed, passed, skipped, warned
from cri_exporter.doctor.registry import check
from cri_exporter.doctor.requirements import CGROUPFS

REF_PREREQ = "https://kubernetes.io/docs/setup/production-environment/container-runtimes/#install-and-configure-prerequisites"
REF_CGROUPS = "https://kubernetes.io/docs/concepts/architecture/cgroups/"
REF_CGROUP_V1 = "https://kubernetes.io/docs/reference/config-api/kubelet-config.v1beta1/"  # failCgroupV1
REF_SWAP = "https://kubernetes.io/docs/concepts/cluster-administration/swap-memory-management/"

MODULES_LOAD_FIX = (
    "modprobe {m}\n"
    "echo {m} > /etc/modules-load.d/k8s-{m}.conf   # load it at every boot"
)


def _module(ctx, name: str, why: str):
    state = procfs.module_state(ctx.hostfs, name)
    if state:
        return passed(f"{name} is {state}", seen=f"{name}: {state}")
    return failed(
        f"kernel module {name} is not loaded",
        seen=f"{name} is in neither /proc/modules, /sys/module nor modules.builtin",
        why=why,
        fix=MODULES_LOAD_FIX.format(m=name),
        refs=[REF_PREREQ],
    )


# CNI plugins that put pods on a Linux bridge: the reference bridge plugin,
# flannel (delegates to bridge by default) and weave-net (its "weave" bridge).
# Calico, Cilium, Antrea (OVS), kindnet (ptp) and other routed or eBPF
# datapaths do not, and need neither br_netfilter nor bridge-nf-call-*
# (kubeadm removed those preflight checks for that reason: kubernetes PR 123464).
LINUX_BRIDGE_PLUGINS = ("bridge", "flannel", "weave-net")
REF_KUBEADM_BRIDGE = "https://github.com/kubernetes/kubernetes/pull/123464"
# kube-proxy's createProxier hands a sysctl interface to the iptables and ipvs
# proxiers only; their NewProxier logs "Missing br-netfilter module or unset
# sysctl br-nf-call-iptables" when the sysctl is not 1. The nftables proxier's
# NewProxier takes no sysctl interface and checks nothing of the kind
# (kubernetes 1.29-1.36).
REF_PROXY_MODES = "https://github.com/kubernetes/kubernetes/blob/master/cmd/kube-proxy/app/server_linux.go"
REF_IPTABLES_PROXIER = "https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/iptables/proxier.go"
REF_NFTABLES_PROXIER = "https://github.com/kubernetes/kubernetes/blob/master/pkg/proxy/nftables/proxier.go"
BRIDGE_NF_MODES = ("iptables", "ipvs")


def _bridge_need(ctx) -> tuple[bool | None, str]:
    """(whether bridged pod traffic must pass netfilter here, why we think so);
    None when that cannot be established. It must where the CNI puts pods on
    a Linux bridge and kube-proxy programs Services with iptables (iptables
    or ipvs mode)."""
    cni = ctx.cni
    if cni is None or cni.chosen is None:
        return None, "no loadable CNI config tells whether pods sit on a Linux bridge"
    types = [str(p.get("type")) for p in cni.chosen.plugins]
    bridged = [t for t in types if t in LINUX_BRIDGE_PLUGINS]
    if not bridged:
        return False, f"{cni.chosen.path} ({', '.join(types)}) puts pods on no Linux bridge"
    bridge = f"{cni.chosen.path} puts pods on a Linux bridge ({bridged[0]})"
    proxy = ctx.kube_proxy
    if proxy.state == "running" and proxy.mode in BRIDGE_NF_MODES:
        return True, f"{bridge}; kube-proxy runs in {proxy.mode} mode: {proxy.seen}"
    if proxy.state == "running" and proxy.mode == "nftables":
        return False, (f"{bridge}, but kube-proxy runs in nftables mode ({proxy.seen}); its nftables proxier "
                       "neither needs nor checks bridge-nf-call, unlike the iptables and ipvs proxiers")
    if proxy.state == "absent":
        return False, f"{bridge}, but {proxy.seen}: no kube-proxy iptables/ipvs rules need to see bridged traffic"
    return None, f"{bridge}; kube-proxy's mode is unknown: {proxy.seen}"


def _for_bridged_pods(ctx, finding):
    """Bridge netfilter matters only where pods share a Linux bridge and
    kube-proxy runs in iptables or ipvs mode: there a finding stands; where
    either is known not to hold, a bad value is a skip saying why; where it
    cannot be established, a failure is only a warning."""
    needed, reason = _bridge_need(ctx)
    seen = "\n".join(x for x in (finding.seen, reason) if x)
    refs = [REF_KUBEADM_BRIDGE, REF_PROXY_MODES, REF_IPTABLES_PROXIER, REF_NFTABLES_PROXIER]
    if finding.status is Status.PASS or needed:
        extra = [r for r in refs if r not in finding.refs] if needed and finding.status is not Status.PASS else []
        return dataclasses.replace(finding, seen=seen, refs=tuple(finding.refs) + tuple(extra))
    if needed is False:
        return dataclasses.replace(skipped(f"not needed here: {reason} ({finding.summary})", seen=seen),
                                   refs=tuple(refs))
    return warned(finding.summary, seen=seen + "\njudged as a warning, not a failure: it is needed only with a "
                  "Linux-bridge CNI and kube-proxy in iptables or ipvs mode, which could not be established",
                  why=finding.why + " Whether this node needs it depends on the CNI and on kube-proxy's mode.",
                  fix=finding.fix, refs=list(finding.refs) + [r for r in refs if r not in finding.refs])


@check("kernel.module.br_netfilter", Severity.CRITICAL)
def br_netfilter(ctx):
    """br_netfilter makes bridged pod traffic visible to iptables; needed where
    the CNI puts pods on a Linux bridge (bridge, flannel, weave) and kube-proxy
    runs in iptables or ipvs mode."""
    return _for_bridged_pods(ctx, _module(
        ctx, "br_netfilter",
        "Without it, traffic between pods on the same bridge bypasses iptables: Service "
        "ClusterIPs answered by a pod on the same node break, and the "
        "net.bridge.bridge-nf-call-* sysctls do not even exist.",
    ))


@check("kernel.module.overlay", Severity.CRITICAL)
def overlay(ctx):
    """overlay backs the runtime's default snapshotter (overlayfs)."""
    return _module(
        ctx, "overlay",
        "containerd's overlayfs snapshotter and CRI-O's overlay storage driver need it; "
        "without it every image unpack or container start fails.",
    )


IPVS_MODULES = ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack")


REF_IPVS = "https://kubernetes.io/docs/reference/networking/virtual-ips/#proxy-mode-ipvs"


def _ipvs_mode(ctx) -> tuple[bool, str]:
    """(whether kube-proxy runs in IPVS mode here, why we think so). kube-proxy's
    own mode settles it (facts/kube_proxy.py); where that is unknown, or no
    kube-proxy runs right now (one in IPVS mode that cannot start for want of
    these very modules restarts in a loop), the kube-ipvs0 dummy interface
    it creates in IPVS mode is the evidence."""
    proxy = ctx.kube_proxy
    if proxy.state == "running":
        return proxy.mode == "ipvs", f"kube-proxy runs in {proxy.mode} mode: {proxy.seen}"
    interface = ctx.hostfs.exists("/sys/class/net/kube-ipvs0")
    if interface:
        return True, f"kube-ipvs0 exists (kube-proxy creates it in IPVS mode); kube-proxy: {proxy.seen}"
    return False, f"no kube-ipvs0 interface, and {proxy.seen}"


@check("kernel.module.ipvs", Severity.CRITICAL)
def ipvs(ctx):
    """kube-proxy in IPVS mode needs the ip_vs modules; only checked where it
    runs in IPVS mode (its mode, else the kube-ipvs0 interface it creates)."""
    in_ipvs, reason = _ipvs_mode(ctx)
    if not in_ipvs:
        proxy = ctx.kube_proxy
        summary = (f"kube-proxy runs in {proxy.mode} mode, not IPVS" if proxy.state == "running" else
                   "no kube-proxy runs here" if proxy.state == "absent" else
                   "kube-proxy's mode is unknown and there is no kube-ipvs0 interface")
        return skipped(summary, seen=reason)
    missing = [m for m in IPVS_MODULES if not procfs.module_state(ctx.hostfs, m)]
    if not missing:
        return passed("IPVS modules are loaded", seen=f"{', '.join(IPVS_MODULES)}\n{reason}")
    return failed(
        f"kube-proxy runs in IPVS mode but {', '.join(missing)} not loaded",
        seen=f"missing modules: {', '.join(missing)}\n{reason}",
        why="kube-proxy falls back or fails to program Services when a scheduler module is absent.",
        fix="\n".join(f"modprobe {m}" for m in missing)
        + f"\nprintf '%s\\n' {' '.join(missing)} > /etc/modules-load.d/ipvs.conf",
        refs=[REF_IPVS, REF_PROXY_MODES],
    )


def _sysctl(ctx, name: str, severity_fail: bool, why: str, absent_hint: str = ""):
    value = procfs.sysctl(ctx.hostfs, name)
    conf = "/etc/sysctl.d/k8s.conf"
    fix = f"sysctl -w {name}=1\necho '{name} = 1' >> {conf}   # keep it across reboots"
    if value is None:
        make = failed if severity_fail else warned
        return make(f"{name} does not exist", seen=f"/proc/sys/{name.replace('.', '/')} is absent{absent_hint}",
                    why=why, fix=("modprobe br_netfilter\n" if absent_hint else "") + fix, refs=[REF_PREREQ])
    if value == "1":
        return passed(f"{name} = 1")
    make = failed if severity_fail else warned
    return make(f"{name} = {value}, expected 1", seen=f"/proc/sys/{name.replace('.', '/')} = {value}", why=why, fix=fix, refs=[REF_PREREQ])


@check("kernel.sysctl.ip_forward", Severity.CRITICAL)
def ip_forward(ctx):
    """Pods' traffic is routed through the node; forwarding must be on."""
    return _sysctl(ctx, "net.ipv4.ip_forward", True,
                   "With forwarding off, pod traffic leaving the node and Service traffic are dropped; "
                   "kubeadm preflight refuses to run.")


@check("kernel.sysctl.bridge_nf_call_iptables", Severity.CRITICAL)
def bridge_nf_call_iptables(ctx):
    """Bridged IPv4 traffic must pass iptables for kube-proxy's rules to apply
    (where the CNI puts pods on a Linux bridge and kube-proxy runs in iptables
    or ipvs mode)."""
    return _for_bridged_pods(ctx, _sysctl(
        ctx, "net.bridge.bridge-nf-call-iptables", True,
        "kube-proxy's iptables rules never see pod-to-pod traffic on the bridge, so "
        "Services reached from a pod on the same node fail intermittently.",
        " (br_netfilter is not loaded)"))


@check("kernel.sysctl.bridge_nf_call_ip6tables", Severity.WARNING)
def bridge_nf_call_ip6tables(ctx):
    """The IPv6 twin of bridge-nf-call-iptables; matters on dual-stack clusters."""
    return _for_bridged_pods(ctx, _sysctl(
        ctx, "net.bridge.bridge-nf-call-ip6tables", False,
        "IPv6 Services reached over the bridge skip ip6tables (dual-stack clusters).",
        " (br_netfilter is not loaded)"))


@check("kernel.swap", Severity.CRITICAL)
def swap(ctx):
    """The kubelet refuses to start with swap on unless failSwapOn is false."""
    devices = procfs.swaps(ctx.hostfs)
    fail_swap_on, where = ctx.kubelet.fail_swap_on()
    if not devices:
        return passed("swap is off")
    seen = f"swap on {', '.join(devices)} (/proc/swaps); failSwapOn={str(fail_swap_on).lower()} ({where})"
    if not fail_swap_on:
        return passed("swap is on and the kubelet allows it (failSwapOn: false)", seen=seen)
    return failed(
        "swap is on and the kubelet's failSwapOn is true",
        seen=seen,
        why="The kubelet exits at start with \"running with swap on is not supported\": the node goes NotReady.",
        fix="swapoff -a   # and comment out the swap line in /etc/fstab\n"
        "# or, to run with swap (1.28+), in /var/lib/kubelet/config.yaml:\n"
        "failSwapOn: false\nmemorySwap:\n  swapBehavior: LimitedSwap",
        refs=[REF_SWAP],
    )


@check("kernel.cgroup.version", Severity.WARNING, requires=(CGROUPFS,))
def cgroup_version(ctx):
    """cgroup v1 is deprecated (kubelet 1.31) and refused by default from 1.35
    (failCgroupV1 defaults to true there)."""
    info = ctx.cgroups
    if info.version == 2:
        return passed("cgroup v2 (unified)")
    fail_v1, where = ctx.kubelet.value("failCgroupV1", None)
    version = ctx.kubelet.version
    mode = "v1 (hybrid, v2 mounted at /sys/fs/cgroup/unified with v1 controllers)" if info.hybrid else "v1 (legacy)"
    seen = (f"cgroup {mode}; failCgroupV1={'unset' if fail_v1 is None else fail_v1} ({where}); "
            + ctx.kubelet.version_text)
    fix = ("Boot with cgroup v2: add systemd.unified_cgroup_hierarchy=1 to the kernel command line "
           "(GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub and reboot).\n"
           "To keep v1 for now on kubelet 1.35+, set in the kubelet's config file:\nfailCgroupV1: false")
    explicit = None if fail_v1 is None else str(fail_v1).lower() == "true"
    refused = explicit if explicit is not None else (version is not None and version.at_least(1, 35))
    if refused:
        return failed("cgroup v1 and the kubelet refuses it" + ("" if explicit else " (failCgroupV1 defaults to true from 1.35)"),
                      seen=seen, why="The kubelet exits at start on cgroup v1 while failCgroupV1 is true: the node "
                      "stays NotReady.", fix=fix, refs=[REF_CGROUPS, REF_CGROUP_V1])
    return warned(f"cgroup {mode}: deprecated", seen=seen,
                  why="cgroup v1 is in maintenance mode; kubelet 1.35+ refuses to start on it unless "
                  "failCgroupV1 is false, so the next kubelet upgrade takes the node down.",
                  fix=fix, refs=[REF_CGROUPS, REF_CGROUP_V1])


REQUIRED_CONTROLLERS = ("cpu", "cpuset", "memory", "pids")


@check("kernel.cgroup.controllers", Severity.CRITICAL, requires=(CGROUPFS,))
def cgroup_controllers(ctx):
    """The kubelet needs the cpu, cpuset, memory and pids controllers."""
    info = ctx.cgroups
    missing = [c for c in REQUIRED_CONTROLLERS if c not in info.controllers]
    source = "/sys/fs/cgroup/cgroup.controllers" if info.version == 2 else "/proc/cgroups"
    seen = f"{source}: {' '.join(sorted(info.controllers)) or '(none)'}"
    if not missing:
        return passed("cpu, cpuset, memory and pids controllers are enabled", seen=seen)
    return failed(
        f"cgroup controllers missing: {', '.join(missing)}",
        seen=seen,
        why="The kubelet fails its start-up checks (\"missing cgroups: ...\") or cannot enforce pod limits.",
        fix="Enable them on the kernel command line, e.g. cgroup_enable=memory cgroup_memory=1 "
        "(Raspberry Pi and some cloud kernels), then reboot.",
        refs=[REF_CGROUPS],
    )


@check("kernel.conntrack", Severity.WARNING)
def conntrack(ctx):
    """A full conntrack table drops new connections silently."""
    count = procfs.sysctl(ctx.hostfs, "net.netfilter.nf_conntrack_count")
    limit = procfs.sysctl(ctx.hostfs, "net.netfilter.nf_conntrack_max")
    if count is None or limit is None or not count.isdigit() or not limit.isdigit() or int(limit) == 0:
        return skipped("nf_conntrack is not loaded (no net.netfilter.nf_conntrack_count)")
    used = int(count) / int(limit)
    seen = f"nf_conntrack_count={count} nf_conntrack_max={limit} ({used:.0%})"
    if used < 0.75:
        return passed(f"conntrack table {used:.0%} full", seen=seen)
    make = failed if used >= 0.9 else warned
    return make(
        f"conntrack table {used:.0%} full",
        seen=seen,
        why="When the table is full the kernel drops new connections (\"nf_conntrack: table full, "
        "dropping packet\" in dmesg): pods see random timeouts.",
        fix=f"sysctl -w net.netfilter.nf_conntrack_max={int(limit) * 2}\n"
        "# kube-proxy sets this from conntrack.maxPerCore; raise that in its config to keep it",
        refs=["https://www.kernel.org/doc/html/latest/networking/nf_conntrack-sysctl.html"],
    )


# Recommended by containerd/kind/k3s for many containers watching files.
INOTIFY_MIN = {"fs.inotify.max_user_instances": 8192, "fs.inotify.max_user_watches": 524288}


@check("kernel.inotify", Severity.WARNING)
def inotify(ctx):
    """Low inotify limits break log tailing and config reloads on busy nodes."""
    low, seen = [], []
    for name, minimum in INOTIFY_MIN.items():
        v = procfs.sysctl(ctx.hostfs, name)
        seen.append(f"{name}={v}")
        if v is not None and v.isdigit() and int(v) < minimum:
            low.append((name, minimum))
    if not any(s.split("=")[1] != "None" for s in seen):
        return skipped("no /proc/sys/fs/inotify")
    if not low:
        return passed("inotify limits are high enough", seen=" ".join(seen))
    return warned(
        "inotify limits are low: " + ", ".join(n for n, _ in low),
        seen=" ".join(seen),
        why="`kubectl logs -f`, the kubelet's config watches and many pods fail with \"too many open "
        "files\" or \"no space left on device\" once the per-user inotify limits are used up.",
        fix="\n".join(f"sysctl -w {n}={m}" for n, m in low)
        + "\n# and the same lines (name = value) in /etc/sysctl.d/99-inotify.conf",
        refs=["https://man7.org/linux/man-pages/man7/inotify.7.html"],
    )
