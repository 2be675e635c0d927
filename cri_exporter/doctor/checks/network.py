"""The node's network as pods need it, read over netlink (read-only)."""
from __future__ import annotations

import time

from cri_exporter.cri.client import CriError
from cri_exporter.doctor.facts import procfs
from cri_exporter.doctor.model import Severity, failed, passed, skipped, warned
from cri_exporter.doctor.registry import check
from cri_exporter.doctor.requirements import CNI_BRIDGE, NETLINK

REF_NET = "https://kubernetes.io/docs/concepts/cluster-administration/networking/"
REF_BRIDGE = "https://www.cni.dev/plugins/current/main/bridge/"
NETNS_DIR = "/run/netns"


@check("network.default_route", Severity.CRITICAL, requires=(NETLINK,))
def default_route(ctx):
    """The kubelet and kube-proxy pick the node IP from the default route."""
    facts = ctx.network
    if facts.default_routes:
        gw, dev = facts.default_routes[0]
        return passed(f"default route via {gw or '(direct)'} dev {dev}",
                      seen="\n".join(f"default via {g or '-'} dev {d}" for g, d in facts.default_routes))
    return failed(
        "no IPv4 default route", seen="the main routing table has no 0.0.0.0/0 route",
        why="The kubelet cannot choose a node IP (\"unable to select an IP from default routes\"), kube-proxy "
        "and many CNIs fail the same way, and pods cannot leave the node.",
        fix="ip route add default via <gateway> dev <uplink>\n# or set the kubelet's --node-ip explicitly, "
        "and fix the network configuration (netplan, NetworkManager, systemd-networkd)",
        refs=[REF_NET])


@check("network.mtu", Severity.WARNING, requires=(NETLINK,))
def mtu(ctx):
    """A pod bridge or veth with an MTU above the uplink's drops large packets."""
    facts = ctx.network
    if not facts.default_routes:
        return skipped("no default route, so no uplink to compare with (see network.default_route)")
    uplink = facts.link(facts.default_routes[0][1])
    if uplink is None:
        return skipped(f"uplink {facts.default_routes[0][1]} not found")
    bridge = ctx.cni.bridge_name if ctx.cni else None
    pod_side = [link for link in facts.links if link.index != uplink.index
                and (link.kind == "veth" or (bridge and link.name == bridge))]
    too_big = [link for link in pod_side if link.mtu > uplink.mtu]
    seen = f"uplink {uplink.name} mtu {uplink.mtu}; " + (
        ", ".join(f"{link.name} ({link.kind or 'link'}) mtu {link.mtu}" for link in too_big or pod_side[:10]) or "no pod interfaces")
    if not too_big:
        return passed(f"{len(pod_side)} pod interface(s) at or below the uplink MTU {uplink.mtu}", seen=seen)
    return warned(
        f"{len(too_big)} pod interface(s) have an MTU above the uplink's {uplink.mtu}", seen=seen,
        why="Packets larger than the uplink MTU are dropped or fragmented when they leave the node: TLS "
        "handshakes and large responses hang while pings work (the classic MTU black hole).",
        fix=f"Set the CNI's MTU to {uplink.mtu} or less (minus the overlay's overhead: 50 for VXLAN), e.g. "
        '"mtu": ' + str(uplink.mtu) + " in the bridge plugin's config; new pods get it, recreate old ones.",
        refs=[REF_BRIDGE])


@check("network.bridge", Severity.CRITICAL, requires=(CNI_BRIDGE, NETLINK))
def bridge(ctx):
    """The bridge the CNI config names must exist and be up once pods run."""
    name = ctx.cni.bridge_name
    facts = ctx.network
    link = facts.link(name)
    pods = ctx.cri("list_pod_sandboxes")
    running = None if isinstance(pods, CriError) else [p for p in pods if p.state == "ready"]
    if link is None:
        on_network = None if running is None else _on_pod_network(ctx, running)
        seen = (f"no link {name}; ready sandboxes: {'unknown' if running is None else len(running)}"
                + ("" if on_network is None else f", {len(on_network)} on the pod network"))
        if on_network:
            return failed(f"CNI bridge {name} is missing while pods run", seen=seen,
                          why="Pods attached to the bridge have no connectivity; it was deleted by hand or by a "
                          "network restart.",
                          fix=f"Recreate the pods on this node (kubectl delete pod ... / drain), the bridge plugin "
                          f"creates {name} again.", refs=[REF_BRIDGE])
        if on_network is not None:
            # A node that runs only hostNetwork pods (kube-proxy, the CNI's own
            # DaemonSet) has no bridge yet, and is healthy.
            return passed(f"CNI bridge {name} is not created yet: no pod on the pod network runs here "
                          "(the bridge plugin creates it with the first one)", seen=seen)
        return warned(f"CNI bridge {name} does not exist yet", seen=seen,
                      why="The bridge plugin creates it with the first pod; if pods should be running here, "
                      "sandbox creation is failing before the network is set up.",
                      fix="kubectl get pods -A -o wide --field-selector spec.nodeName=$(hostname)\n"
                      "journalctl -u kubelet | grep -i cni", refs=[REF_BRIDGE])
    if link.kind and link.kind != "bridge":
        return failed(f"{name} is a {link.kind}, not a bridge", seen=f"{name}: kind {link.kind}",
                      why="The bridge plugin fails every pod (\"... already exists but is not a bridge\").",
                      fix=f"ip link delete {name}   # after checking nothing else uses it", refs=[REF_BRIDGE])
    if not link.up:
        return failed(f"CNI bridge {name} is down", seen=f"{name}: mtu {link.mtu}, state DOWN",
                      why="Every pod on this bridge is cut off from the node and the network.",
                      fix=f"ip link set {name} up", refs=[REF_BRIDGE])
    return passed(f"CNI bridge {name} is up", seen=f"{name}: mtu {link.mtu}")


# A node runs at most a few hundred sandboxes; past this many, the rest are
# taken to be on the pod network (the bridge is then expected) unasked.
MAX_STATUS_CALLS = 256


def _on_pod_network(ctx, sandboxes) -> list:
    """The ready sandboxes that are not hostNetwork (PodSandboxStatus: network
    namespace mode NODE); one whose status cannot be read counts as on it."""
    out = []
    for i, p in enumerate(sandboxes):
        if i >= MAX_STATUS_CALLS:
            out.append(p)
            continue
        try:
            host = ctx.client.pod_sandbox_uses_host_network(p.id)
        except CriError:
            host = False
        if not host:
            out.append(p)
    return out


NETNS_GRACE_SECONDS = 300


@check("network.leaked_netns", Severity.WARNING)
def leaked_netns(ctx):
    """cni-* network namespaces that no process (so no sandbox) lives in.

    containerd and CRI-O name pod namespaces cni-<uuid> under /run/netns and
    keep the sandbox's pause process in it; one without any process was left
    behind by a failed teardown and still holds its pod IP.
    """
    pod_netns = procfs.netns_files(ctx.hostfs, NETNS_DIR, "cni-")
    if not pod_netns:
        return passed(f"no cni-* namespaces in {NETNS_DIR}")
    names = sorted(pod_netns)
    used, denied = ctx.netns_inodes
    if denied:
        # Without the other processes' namespaces every cni-* one would look
        # leaked: the DaemonSet and the systemd unit drop CAP_SYS_PTRACE.
        return skipped(f"cannot see the network namespace of {denied} pod process(es) (permission denied; "
                       "needs CAP_SYS_PTRACE): run `cri-exporter doctor --check network.leaked_netns` as root on the node")
    now = time.time()
    # The runtime creates the namespace, runs CNI ADD, and only then starts the
    # pause process in it (and tears down in the reverse order): a young one
    # with no process is a sandbox on its way in or out, not a leak.
    young = [n for n in names if pod_netns[n][0] not in used and now - pod_netns[n][1] < NETNS_GRACE_SECONDS]
    leaked = [n for n in names if pod_netns[n][0] not in used and n not in young]
    seen = f"{len(names)} cni-* namespaces, {len(leaked)} with no process: " + ", ".join(leaked[:20]) + (
        f"; {len(young)} without a process yet younger than {NETNS_GRACE_SECONDS} s (a sandbox being set up "
        "or torn down) not counted" if young else "")
    if not leaked:
        return passed(f"all {len(names)} cni-* namespaces belong to running sandboxes" if not young else
                      f"no leaked cni-* namespace ({len(young)} of {len(names)} without a process for under {NETNS_GRACE_SECONDS} s: sandboxes on their way in or out)",
                      seen=seen)
    return warned(
        f"{len(leaked)} leaked pod network namespace(s)", seen=seen,
        why="Each one keeps its veth and its IP reserved in the CNI IPAM store: the node runs out of pod IPs "
        "(\"no IP addresses available in range set\") long before it runs out of pods.",
        fix="For each name, after checking no sandbox uses it (crictl pods; crictl inspectp <id> | grep netns):\n"
        + "\n".join(f"ip netns delete {n}" for n in leaked[:5])
        + "\nand remove its IP files from /var/lib/cni/networks/<network>/ (host-local IPAM)",
        refs=["https://www.cni.dev/plugins/current/ipam/host-local/"])
