"""The runtime as the kubelet sees it, over the CRI socket (read-only calls)."""
from __future__ import annotations

import json
import os
import stat

from cri_exporter.cri.client import DEFAULT_ENDPOINTS, CriError, socket_path
from cri_exporter.doctor.facts.files import resolve
from cri_exporter.doctor.model import Severity, failed, passed, skipped, warned
from cri_exporter.doctor.registry import check
from cri_exporter.doctor.requirements import CRI_ANSWERS, CRI_STATUS
from cri_exporter.sandbox_stats_errors import SANDBOX_GONE, TASK_GONE, unavailable_reason

REF_CRI = "https://kubernetes.io/docs/concepts/architecture/cri/"
REF_DEBUG = "https://kubernetes.io/docs/tasks/debug/debug-cluster/crictl/"
REF_TROUBLESHOOT = "https://kubernetes.io/docs/setup/production-environment/tools/kubeadm/troubleshooting-kubeadm/"
EXTRA_SOCKETS = ("unix:///var/run/dockershim.sock",)


@check("cri.socket", Severity.CRITICAL)
def socket(ctx):
    """The runtime's socket exists, may be opened, and answers Version."""
    endpoint = ctx.endpoint
    path = socket_path(endpoint)
    v = ctx.cri("version")
    if path is not None:
        try:
            st = os.stat(path)
        except PermissionError:
            return failed(f"no permission to reach {path}", seen=f"endpoint {endpoint}; running as uid {os.geteuid()}",
                          why="A directory on the way to the socket may not be searched by this user, so nothing "
                          "can be asked of the runtime.",
                          fix="Run the doctor as root (sudo), or as a member of the socket's group.", refs=[REF_DEBUG])
        except OSError:
            return failed(f"runtime socket {path} does not exist", seen=f"endpoint {endpoint}",
                          why="Nothing listens where the kubelet and crictl look: the runtime is not running, "
                          "or the endpoint is wrong.",
                          fix="systemctl status containerd   # or crio; journalctl -u containerd -e\n"
                          "or pass --runtime-endpoint / CONTAINER_RUNTIME_ENDPOINT", refs=[REF_DEBUG])
        if not stat.S_ISSOCK(st.st_mode):
            return failed(f"{path} is not a socket", seen=f"mode {stat.filemode(st.st_mode)}",
                          why="A file or directory sits where the runtime should listen (a bad bind mount or a "
                          "leftover), so the runtime cannot create its socket.",
                          fix=f"rm -rf {path} && systemctl restart containerd", refs=[REF_DEBUG])
        if not os.access(path, os.R_OK | os.W_OK, effective_ids=os.access in os.supports_effective_ids):
            return failed(f"no permission to open {path}",
                          seen=f"mode {stat.filemode(st.st_mode)} uid {st.st_uid} gid {st.st_gid}; running as uid {os.geteuid()}",
                          why="Without read/write on the socket nothing can be asked of the runtime.",
                          fix="Run the doctor as root (sudo), or as a member of the socket's group.", refs=[REF_DEBUG])
    if isinstance(v, CriError):
        if v.code == "UNIMPLEMENTED":
            return passed(f"{endpoint} answers gRPC (CRI API: see cri.api_version)")
        return failed(f"the runtime at {endpoint} does not answer", seen=str(v),
                      why="The kubelet cannot create, stop or inspect pods.",
                      fix="systemctl restart containerd   # or crio; then journalctl -u containerd -e", refs=[REF_DEBUG])
    return passed(f"{endpoint} answers: {v.runtime_name} {v.runtime_version}")


@check("cri.multiple_sockets", Severity.WARNING)
def multiple_sockets(ctx):
    """Several runtime sockets confuse kubeadm, crictl and the kubelet's default."""
    found: list[str] = []
    seen_inodes: set[tuple[int, int]] = set()
    for ep in DEFAULT_ENDPOINTS + EXTRA_SOCKETS:
        p = socket_path(ep)
        if p is None:  # not a unix:// endpoint: no socket file to look for
            continue
        try:
            st = os.stat(resolve(ctx.hostfs, p))
        except OSError:
            continue
        # /var/run is usually a symlink to /run: one socket, two names.
        if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) not in seen_inodes:
            seen_inodes.add((st.st_dev, st.st_ino))
            found.append(p)
    if len(found) <= 1:
        return passed(f"{found[0] if found else 'no well-known runtime socket'}" + (" is the only runtime socket" if found else ""))
    return warned(
        f"{len(found)} runtime sockets: {', '.join(found)}", seen="\n".join(found),
        why="kubeadm stops with \"Found multiple CRI endpoints on the host\", crictl picks the first it "
        "finds, and a kubelet without containerRuntimeEndpoint may talk to the wrong runtime.",
        fix="Stop and disable the runtime you do not use (e.g. systemctl disable --now docker), or set "
        "containerRuntimeEndpoint in the kubelet config and criSocket in kubeadm's config.",
        refs=[REF_TROUBLESHOOT])


@check("cri.api_version", Severity.CRITICAL)
def api_version(ctx):
    """The runtime must serve CRI runtime.v1 (the kubelet dropped v1alpha2 in 1.26)."""
    v = ctx.cri("version")
    if isinstance(v, CriError):
        if v.code == "UNIMPLEMENTED":
            return failed("the runtime does not serve CRI runtime.v1", seen=str(v),
                          why="The kubelet (1.26+) only speaks runtime.v1: the node cannot run pods.",
                          fix="containerd: remove \"cri\" from disabled_plugins and restart; upgrade containerd "
                          "to 1.6+ or CRI-O to 1.24+.", refs=[REF_CRI])
        return skipped(f"the runtime does not answer (see cri.socket): {v}")
    seen = f"{v.runtime_name} {v.runtime_version}, runtime_api_version={v.runtime_api_version}"
    if v.runtime_api_version != "v1":
        return failed(f"runtime API {v.runtime_api_version}, not v1", seen=seen,
                      why="The kubelet 1.26+ needs runtime.v1.", fix="Upgrade the runtime.", refs=[REF_CRI])
    return passed(f"runtime.v1 ({v.runtime_name} {v.runtime_version})", seen=seen)


def _condition(ctx, name: str):
    return next((c for c in ctx.cri("status").conditions if c.type == name), None)


def _condition_true(ctx, name: str, summary: str, why: str, fix: str):
    """A Status condition that must be true: pass, or fail with its reason."""
    cond = _condition(ctx, name)
    if cond and cond.status:
        return passed(f"{name}=true")
    seen = f"{name}={'absent' if cond is None else 'false'}" + (f" reason={cond.reason} message={cond.message}" if cond else "")
    return failed(summary, seen=seen, why=why, fix=fix, refs=[REF_DEBUG])


@check("cri.runtime_ready", Severity.CRITICAL, requires=(CRI_ANSWERS, CRI_STATUS))
def runtime_ready(ctx):
    """Status must report RuntimeReady=true."""
    return _condition_true(
        ctx, "RuntimeReady", "the runtime reports it is not ready",
        "The kubelet marks the node NotReady (\"container runtime is down\").",
        "journalctl -u containerd -e   # or crio: the reason above names the failing part")


@check("cri.network_ready", Severity.CRITICAL, requires=(CRI_ANSWERS, CRI_STATUS))
def network_ready(ctx):
    """Status must report NetworkReady=true: the CNI config loaded."""
    return _condition_true(
        ctx, "NetworkReady", "the runtime reports the pod network is not ready",
        "The kubelet keeps the node NotReady (\"network plugin is not ready: cni config "
        "uninitialized\") and no pod outside the host network starts.",
        "Install or fix the CNI config (see cni.config and cni.plugins), e.g. apply your network "
        "add-on's manifest; containerd picks up a new config without a restart.")


DEPRECATION_CONDITION = "ContainerdHasNoDeprecationWarnings"


@check("cri.deprecations", Severity.WARNING, requires=(CRI_ANSWERS, CRI_STATUS))
def deprecations(ctx):
    """containerd 1.7.14+ and 2.x report deprecated features in use as a Status
    condition (ContainerdHasNoDeprecationWarnings) whose message is JSON (id ->
    text); decoded here."""
    cond = _condition(ctx, DEPRECATION_CONDITION)
    if cond is None:
        return skipped(f"the runtime reports no {DEPRECATION_CONDITION} condition (containerd before 1.7.14, or CRI-O)")
    if cond.status:
        return passed("no deprecated features in use")
    try:
        decoded = json.loads(cond.message)
        items = [f"{k}: {v}" for k, v in decoded.items()] if isinstance(decoded, dict) else [str(decoded)]
    except (ValueError, TypeError):
        items = [cond.message]
    return warned(f"{len(items)} deprecated feature(s) in use", seen="\n".join(items),
                  why="Deprecated features are removed in a later containerd release; the node breaks at that upgrade.",
                  fix="Follow each message; `ctr deprecations list` shows them too.",
                  refs=["https://github.com/containerd/containerd/blob/main/RELEASES.md#deprecated-features"])


@check("cri.pod_stats", Severity.WARNING, requires=(CRI_ANSWERS,))
def pod_stats(ctx):
    """ListPodSandboxStats, asked as the kubelet asks it (an empty filter), fails whole when one
    ready sandbox is broken (e.g. "cgroupPath is empty": 1.6.20, 1.7.24, 2.1.9); the kubelet's
    stats and metrics then go blank. 1.7.16+ and 2.x leave out a sandbox they get NOT_FOUND for
    instead. So every ready sandbox the answer lacks is asked alone. One whose container has just
    exited (its task gone while the runtime still lists it running: sandbox_stats_errors.py) is
    asked once more, since that passes within a second of the exit; one it stays so for is a
    container whose exit the runtime could not record (crilab.scenario.unrecorded_exit), and is
    named with its own fix."""
    stats = ctx.cri("list_pod_sandbox_stats")
    if isinstance(stats, CriError) and stats.code == "UNIMPLEMENTED":
        return skipped(f"the runtime does not implement ListPodSandboxStats: {stats}")
    pods = ctx.cri("list_pod_sandboxes")
    answered = set() if isinstance(stats, CriError) else {s.id for s in stats}
    broken, stuck = [], []
    for p in [] if isinstance(pods, CriError) else pods:
        if p.state != "ready" or p.id in answered:
            continue
        one = ctx.cri("pod_sandbox_stats", p.id)
        if not isinstance(one, CriError) or unavailable_reason(one) == SANDBOX_GONE:
            continue
        name = f"{p.id[:13]} {p.k8s_namespace}/{p.k8s_name}"
        if unavailable_reason(one) == TASK_GONE:
            try:
                ctx.client.pod_sandbox_stats(p.id)
                continue
            except CriError as again:
                if unavailable_reason(again) == TASK_GONE:
                    stuck.append(f"{name}: {again}")
                    continue
                one = again
        broken.append(f"{name}: {one}")
    if isinstance(stats, CriError) and not broken and not stuck:
        try:  # failed on a sandbox that is fine now (a container had just exited, 1.6.20)
            stats = ctx.client.list_pod_sandbox_stats()
        except CriError as err:
            stats = err
    if stuck:
        return failed(
            f"{len(stuck)} ready sandbox(es) list a running container whose task is gone",
            seen="\n".join(stuck) + ("" if not broken else "\nbroken sandboxes:\n" + "\n".join(broken)),
            why="The runtime could not record that container's exit: CRI still reports it running, so the kubelet "
            "does not restart it, and its pod's stats are missing (containerd 1.6's ListPodSandboxStats fails "
            "whole on it, 1.7.16+ leaves the pod out).",
            fix="journalctl -u containerd | grep 'TaskExit'   # why: e.g. \"failed to checkpoint status\", "
            "a full or read-only /var/lib/containerd\n"
            "Fix that; containerd records the exit at its next retry (back-off up to 5 minutes), or at once on "
            "`systemctl restart containerd`. Meanwhile `crictl stopp` stops the sandbox but `crictl rmp` "
            "refuses it (\"container is still running\").",
            refs=[REF_DEBUG])
    if not isinstance(stats, CriError) and not broken:
        return passed(f"ListPodSandboxStats answers ({len(stats)} pods)")
    if isinstance(stats, CriError):
        seen = f"ListPodSandboxStats: {stats}"
        summary = "ListPodSandboxStats fails" + (f"; {len(broken)} sandbox(es) break it" if broken else "")
        why = ("The kubelet's /stats/summary and metrics-server lose every pod's usage: HPA stops scaling "
               "and evictions use stale data.")
    else:
        seen = f"ListPodSandboxStats left out {len(broken)} ready sandbox(es)"
        summary = f"{len(broken)} ready sandbox(es) have no stats"
        why = "Their usage is missing from the kubelet's /stats/summary and metrics-server (HPA, evictions)."
    return failed(
        summary,
        seen=seen + ("\nbroken sandboxes:\n" + "\n".join(broken) if broken else ""),
        why=why,
        fix=("Remove the broken sandbox(es): crictl stopp <id> && crictl rmp <id>\n" if broken else "")
        + "journalctl -u containerd -e | grep -i stats",
        refs=[REF_DEBUG],
    )
