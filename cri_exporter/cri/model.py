"""Plain values read from the runtime over CRI.

Readers return these instead of protobuf messages so that collectors and the
doctor never depend on the generated code. An optional field is None when the
runtime did not send it (usage_nano_cores outside ListContainerStats on
containerd 1.7 and 2.x, for one): a fake zero would lie on every dashboard.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from sys import intern

# Read-only by convention, not frozen: a frozen dataclass costs five times as
# much to build, and a scrape of a busy node builds tens of thousands.

# Labels the kubelet puts on every sandbox and container it creates.
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"


@dataclass(slots=True)
class RuntimeVersion:
    api_version: str
    runtime_name: str
    runtime_version: str
    runtime_api_version: str


@dataclass(slots=True)
class RuntimeConfig:
    cgroup_driver: str | None  # "systemd", "cgroupfs", or None when the answer has no linux part


@dataclass(slots=True)
class RuntimeCondition:
    type: str
    status: bool
    reason: str
    message: str


@dataclass(slots=True)
class RuntimeStatus:
    conditions: tuple[RuntimeCondition, ...]
    info: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class PodSandbox:
    id: str
    name: str
    namespace: str
    uid: str
    attempt: int
    state: str  # "ready" | "notready"
    created_at_ns: int
    labels: dict[str, str]  # the kubelet's io.kubernetes.* identity labels only (client.identity_labels)
    runtime_handler: str

    @property
    def k8s_namespace(self) -> str:
        return self.labels.get(LABEL_POD_NAMESPACE, self.namespace)

    @property
    def k8s_name(self) -> str:
        return self.labels.get(LABEL_POD_NAME, self.name)

    @property
    def k8s_uid(self) -> str:
        return self.labels.get(LABEL_POD_UID, self.uid)


class IdentityLabels(Mapping):
    """A container's io.kubernetes.* identity labels as a read-only mapping of
    four slots (an absent label is None): one is kept per pod between scrapes
    (client._container_labels), 64 bytes where a dict of three labels was 184
    plus its key table."""

    __slots__ = ("pod_name", "pod_namespace", "pod_uid", "container_name")

    def __init__(self, pod_name: str | None, pod_namespace: str | None, pod_uid: str | None,
                 container_name: str | None):
        self.pod_name = pod_name
        self.pod_namespace = pod_namespace
        self.pod_uid = pod_uid
        self.container_name = container_name

    def get(self, key, default=None):
        slot = _IDENTITY_SLOTS.get(key)
        v = None if slot is None else getattr(self, slot)
        return default if v is None else v

    def __getitem__(self, key: str) -> str:
        v: str | None = self.get(key)
        if v is None:
            raise KeyError(key)
        return v

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        return (k for k, slot in _IDENTITY_SLOTS.items() if getattr(self, slot) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return repr(dict(self))


_IDENTITY_SLOTS = {LABEL_POD_NAME: "pod_name", LABEL_POD_NAMESPACE: "pod_namespace",
                   LABEL_POD_UID: "pod_uid", LABEL_CONTAINER_NAME: "container_name"}


@dataclass(slots=True)
class Container:
    id: str
    pod_sandbox_id: str
    name: str
    attempt: int
    image: str
    image_id: str
    state: str  # "created" | "running" | "exited" | "unknown"
    created_at_ns: int
    labels: Mapping[str, str]  # the kubelet's io.kubernetes.* identity labels only (IdentityLabels)

    @property
    def k8s_name(self) -> str:
        return self.labels.get(LABEL_CONTAINER_NAME, self.name)


@dataclass(slots=True)
class ContainerStatus:
    """The parts of ContainerStatus that ListContainers does not carry."""

    id: str
    state: str
    started_at_ns: int
    finished_at_ns: int
    exit_code: int
    reason: str
    message: str
    # Absolute host path of the log the runtime writes (the sandbox's
    # log_directory joined with the container's log_path); "" when none.
    log_path: str = ""


class RunningStatus:
    """What the status cache keeps of a running container's ContainerStatus:
    its start, and its log path as two strings shared with other containers
    (interned: the pod's log directory, and "<name>/<attempt>.log"). 56 bytes
    and a share of two strings where a ContainerStatus was 96 and a path of
    its own (some 140 bytes): 0.6 MB at 5,000 containers between scrapes. The
    rest of ContainerStatus is what a running container's always says."""

    __slots__ = ("started_at_ns", "_log_head", "_log_tail")
    state = "running"
    finished_at_ns = 0
    exit_code = 0
    reason = ""
    message = ""

    def __init__(self, started_at_ns: int, log_path: str = ""):
        self.started_at_ns = started_at_ns
        # split before the path's second-to-last "/": head + tail is the path, whatever its shape
        cut = log_path.rfind("/", 0, max(log_path.rfind("/"), 0))
        cut = max(cut, 0)
        self._log_head = intern(log_path[:cut])
        self._log_tail = intern(log_path[cut:])

    @property
    def log_path(self) -> str:
        return self._log_head + self._log_tail

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (RunningStatus, ContainerStatus)):
            return (other.state == "running" and self.started_at_ns == other.started_at_ns
                    and self.log_path == other.log_path and other.finished_at_ns == 0 and other.exit_code == 0
                    and other.reason == "" and other.message == "")
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RunningStatus(started_at_ns={self.started_at_ns!r}, log_path={self.log_path!r})"


@dataclass(slots=True)
class ContainerStats:
    id: str
    cpu_usage_ns: int | None = None
    memory_working_set_bytes: int | None = None
    memory_usage_bytes: int | None = None
    memory_rss_bytes: int | None = None
    memory_page_faults: int | None = None
    memory_major_page_faults: int | None = None
    writable_layer_bytes: int | None = None
    writable_layer_inodes: int | None = None
    swap_usage_bytes: int | None = None


@dataclass(slots=True)
class InterfaceStats:
    name: str
    rx_bytes: int | None
    rx_errors: int | None
    tx_bytes: int | None
    tx_errors: int | None
    # Only /proc/<pid>/net/dev has these; CRI's NetworkInterfaceUsage does not.
    rx_packets: int | None = None
    rx_dropped: int | None = None
    tx_packets: int | None = None
    tx_dropped: int | None = None


@dataclass(slots=True)
class PodStats:
    id: str
    cpu_usage_ns: int | None = None
    memory_working_set_bytes: int | None = None
    memory_usage_bytes: int | None = None
    memory_rss_bytes: int | None = None
    process_count: int | None = None
    interfaces: tuple[InterfaceStats, ...] = ()
    containers: tuple[ContainerStats, ...] = ()


@dataclass(slots=True)
class FilesystemUsage:
    kind: str  # "image" | "container"
    mountpoint: str
    used_bytes: int | None
    inodes_used: int | None


@dataclass(slots=True)
class Image:
    id: str
    tags: tuple[str, ...]
    size_bytes: int
    pinned: bool


@dataclass(slots=True)
class ContainerEvent:
    """One GetContainerEvents message about one container instance.

    `status` is that container's own ContainerStatus, picked from the
    statuses of every container of its pod that the event carries; None when
    the runtime left it out (the poll of ListContainers then tells).
    """

    container_id: str
    type: str  # "created" | "started" | "stopped" | "deleted"
    created_at_ns: int
    namespace: str
    pod: str
    pod_uid: str
    container: str
    attempt: int
    status: ContainerStatus | None


# what the status cache keeps of a ContainerStatus answer (collectors/containers._kept)
KeptStatus = ContainerStatus | RunningStatus
