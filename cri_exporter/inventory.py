"""The runtime's pods and containers, with the identity every series carries.

Every value series is keyed by Kubernetes identity (namespace, pod, container),
but a runtime holds several instances of one identity: the exited attempt the
kubelet keeps beside the running restart, an old NOTREADY sandbox beside its
replacement. Exporting each would make duplicate series, so exactly one
instance, the *current* one, speaks for each identity; the others are only
counted (`cri_containers`, `cri_pods`) and described by their last
termination.
"""
from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from typing import Iterable, TypeVar

from cri_exporter.cri import model

_LIVE_CONTAINER_STATES = ("running", "created")

T = TypeVar("T")

# Handlers whose host-side cgroup holds a VM or a user-space kernel, not the
# container's processes: their cgroup readings would describe the sandbox.
VM_HANDLER_HINTS = ("kata", "gvisor", "runsc", "firecracker", "clh", "qemu", "vm")


@dataclass(frozen=True, slots=True)
class PodIdentity:
    namespace: str
    pod: str


@dataclass(frozen=True, slots=True)
class ContainerIdentity:
    namespace: str
    pod: str
    container: str


@dataclass(slots=True, weakref_slot=True)
class Inventory:
    pods: list[model.PodSandbox]
    containers: list[model.Container]
    pods_by_id: dict[str, model.PodSandbox] = field(init=False)
    # identity -> the instance that speaks for it
    current_pods: dict[PodIdentity, model.PodSandbox] = field(init=False)
    current_containers: dict[ContainerIdentity, model.Container] = field(init=False)
    # identity -> its instances other than the current one, best-ranked first
    # (for last-termination facts). Only identities with several: a list for
    # every container was 0.56 MB of a 5,000-container inventory, held between scrapes.
    older_instances: dict[ContainerIdentity, list[model.Container]] = field(init=False)
    # An earlier inventory of the same runtime: its identities (and lists of
    # older instances) equal to this one's are taken instead of new equal ones,
    # so that an inventory of an unchanged node makes nothing that outlives the
    # scrape (cri/list_reuse.py says why).
    previous: InitVar[Inventory | None] = None

    def __post_init__(self, previous: Inventory | None) -> None:
        self.pods_by_id = {p.id: p for p in self.pods}
        self.current_pods = {}
        pod_idents = _canonical(previous.current_pods if previous is not None else None)
        for p in sorted(self.pods, key=lambda p: (p.state == "ready", p.created_at_ns)):
            pod_ident = pod_identity(p)
            self.current_pods[pod_idents.get(pod_ident, pod_ident)] = p  # the best-ranked comes last and wins
        current: dict[ContainerIdentity, model.Container] = {}
        older: dict[ContainerIdentity, list[model.Container]] = {}
        idents = _canonical(previous.current_containers if previous is not None else None)
        for c in sorted(self.containers, key=_container_rank, reverse=True):
            ident = self.container_identity(c)
            ident = idents.get(ident, ident)
            if ident in current:
                older.setdefault(ident, []).append(c)
            else:
                current[ident] = c  # the best-ranked comes first and wins
        if previous is not None and older:
            before = previous.older_instances
            for ident, instances in older.items():
                kept = before.get(ident)
                if kept is not None and len(kept) == len(instances) and all(a is b for a, b in zip(kept, instances)):
                    older[ident] = kept
        self.current_containers, self.older_instances = current, older

    @property
    def container_instances(self) -> dict[ContainerIdentity, list[model.Container]]:
        """identity -> every instance, best-ranked first (made when asked)."""
        older = self.older_instances
        return {ident: [c, *older.get(ident, ())] for ident, c in self.current_containers.items()}

    def container_identity(self, c: model.Container) -> ContainerIdentity:
        """Kubernetes identity from the kubelet's labels, else CRI metadata."""
        labels = c.labels
        pod = self.pods_by_id.get(c.pod_sandbox_id)
        namespace = labels.get(model.LABEL_POD_NAMESPACE) or (pod.k8s_namespace if pod else "")
        pod_name = labels.get(model.LABEL_POD_NAME) or (pod.k8s_name if pod else "")
        return ContainerIdentity(namespace, pod_name, c.k8s_name)

    def pod_uid(self, c: model.Container) -> str:
        pod = self.pods_by_id.get(c.pod_sandbox_id)
        return c.labels.get(model.LABEL_POD_UID) or (pod.k8s_uid if pod else "")

    def last_exited(self) -> dict[ContainerIdentity, model.Container]:
        """The newest exited instance of each container, current or not."""
        out = {}
        older = self.older_instances
        for ident, current in self.current_containers.items():
            if ident not in older:
                if current.state == "exited":
                    out[ident] = current
                continue
            exited = [c for c in (current, *older[ident]) if c.state == "exited"]
            if exited:
                out[ident] = max(exited, key=lambda c: (c.attempt, c.created_at_ns))
        return out


def _canonical(keys: Iterable[T] | None) -> dict[T, T]:
    """key -> itself, for the keys of an earlier inventory's dict (empty if none)."""
    return {} if keys is None else {k: k for k in keys}


def cgroup_backed(pod: model.PodSandbox | None) -> bool:
    """False for a pod whose host cgroup holds a VM (VM_HANDLER_HINTS): only CRI knows its usage."""
    handler = (pod.runtime_handler if pod else "").lower()
    return not any(hint in handler for hint in VM_HANDLER_HINTS)


def pod_identity(p: model.PodSandbox) -> PodIdentity:
    return PodIdentity(p.k8s_namespace, p.k8s_name)


def _container_rank(c: model.Container) -> tuple[bool, int, int]:
    """A live instance beats an exited one; then the newest attempt wins."""
    return (c.state in _LIVE_CONTAINER_STATES, c.attempt, c.created_at_ns)
