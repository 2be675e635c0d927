"""When a check applies to this node, decided when the list of checks is
built (as kubeadm preflight builds its list), not by an early return inside
each check: a CRI-O check on a containerd node, a kubelet check on a host
with no kubelet. A check whose requirement does not hold is reported as a
skip saying why, and its function never runs.

Each requirement reads only context facts (memoized), so deciding costs no
more than the checks would have.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from cri_exporter.cri.client import CriError
from cri_exporter.doctor.facts import kubelet


@dataclass(frozen=True)
class Requirement:
    name: str
    unmet: Callable[[Any], str | None]  # (ctx) -> None when it holds, else the skip's summary


def _runs(kind: str) -> Requirement:
    def unmet(ctx):
        found = ctx.runtime_kind
        if found == kind:
            return None
        return f"{kind} is not this node's runtime" + (f" ({found} is)" if found else " (none found)")

    return Requirement(f"runs {kind}", unmet)


RUNS_CONTAINERD = _runs("containerd")
RUNS_CRIO = _runs("crio")

CONTAINERD_CONFIG_FILE = Requirement(
    "a containerd config file",
    lambda ctx: None if ctx.containerd.exists else f"no {ctx.containerd.path}: containerd runs on its built-in defaults")
CONTAINERD_CONFIG_PARSES = Requirement(
    "the containerd config parses",
    lambda ctx: f"{ctx.containerd.path} does not parse (see containerd.config.parse)" if ctx.containerd.errors else None)
# The runtime config checks: containerd runs here and its file is there to read.
CONTAINERD_CONFIG = (RUNS_CONTAINERD, CONTAINERD_CONFIG_FILE, CONTAINERD_CONFIG_PARSES)

CRIO_CONFIG_FILE = Requirement(
    "a CRI-O config file",
    lambda ctx: None if ctx.crio.exists else "no /etc/crio/crio.conf nor drop-ins: CRI-O runs on its defaults")
CRIO_CONFIG_PARSES = Requirement(
    "the CRI-O config parses",
    lambda ctx: "the CRI-O config does not parse (see crio.config.parse)" if ctx.crio.errors else None)
CRIO_CONFIG = (RUNS_CRIO, CRIO_CONFIG_FILE, CRIO_CONFIG_PARSES)

def _kubelet_unmet(ctx):
    if ctx.kubelet.present:
        return None
    if ctx.kubelet.embedded_in:
        return f"{ctx.kubelet.command_from}: its kubelet settings are in no file to read"
    return "no kubelet configuration on this host (config.yaml, kubeadm-flags.env, unit)"


KUBELET = Requirement("a kubelet", _kubelet_unmet)
KUBELET_INSTALLED = Requirement(
    "a kubelet installed",
    lambda ctx: None if ctx.kubelet.installed else
    f"no kubelet unit, process, package or binary ({', '.join(kubelet.BINARIES)}) on this host: nothing to ask")


def _cri_unmet(ctx):
    v = ctx.cri("version")
    return f"the runtime does not answer (see cri.socket): {v}" if isinstance(v, CriError) else None


CRI_ANSWERS = Requirement("the runtime answers CRI", _cri_unmet)
CRI_STATUS = Requirement(
    "CRI Status answers",
    lambda ctx: f"Status failed: {ctx.cri('status')}" if isinstance(ctx.cri("status"), CriError) else None)

CGROUPFS = Requirement(
    "a cgroup filesystem",
    lambda ctx: "no cgroup filesystem under /sys/fs/cgroup" if ctx.cgroups.version is None else None)

NETLINK = Requirement(
    "netlink",
    lambda ctx: f"netlink could not be read: {ctx.network}" if isinstance(ctx.network, Exception) else None)

CNI_DIRECTORY = Requirement(
    "a runtime to read the CNI directory from",
    lambda ctx: "no container runtime found to read the CNI directory from" if ctx.cni is None else None)
CNI_CONFIG = Requirement(
    "a valid CNI config",
    lambda ctx: "no valid CNI config (see cni.config)" if ctx.cni is None or ctx.cni.chosen is None else None)
CNI_BRIDGE = Requirement(
    "a bridge plugin in the CNI config",
    lambda ctx: "the CNI config uses no bridge plugin" if ctx.cni is None or ctx.cni.bridge_name is None else None)


def unmet(ctx, requires: Iterable[Requirement]) -> str | None:
    """The first requirement that does not hold, as the skip's summary."""
    for requirement in requires:
        why = requirement.unmet(ctx)
        if why:
            return why
    return None
