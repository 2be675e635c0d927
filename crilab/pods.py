"""Pods and containers made over CRI and labelled the way the kubelet labels
them, so an exporter finds the same Kubernetes identity as on a real node."""

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cri_exporter.cri import api_pb2 as api
from crilab.images import BUSYBOX_IMAGE

POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"
RESTART_COUNT = "io.kubernetes.container.restartCount"


class Runtime(Protocol):
    """What pods need of a runtime: the lab's Containerd, or the VM guest's
    containerd (crilab.vm_guest.NodeRuntime)."""
    base: Path

    def runtime_stub(self) -> Any: ...


@dataclass
class Pod:
    cd: Runtime
    id: str
    config: api.PodSandboxConfig
    # container name -> ids, one per attempt (exited attempts are kept, as the kubelet does)
    containers: dict[str, list[str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.metadata.name

    @property
    def namespace(self) -> str:
        return self.config.metadata.namespace

    @property
    def uid(self) -> str:
        return self.config.metadata.uid

    def add_container(self, name: str, command: list[str], attempt: int = 0,
                      cpu_quota: int | None = None, cpu_period: int = 100000,
                      memory_limit: int | None = None, start: bool = True,
                      labels: dict | None = None, annotations: dict | None = None,
                      mounts: dict[str, str] | None = None) -> str:
        """`mounts`: container path -> host path, bind-mounted read-write (as the kubelet mounts volumes)."""
        (Path(self.config.log_directory) / name).mkdir(parents=True, exist_ok=True)
        config = api.ContainerConfig(
            metadata=api.ContainerMetadata(name=name, attempt=attempt),
            image=api.ImageSpec(image=BUSYBOX_IMAGE),
            command=command,
            labels={POD_NAME: self.name, POD_NAMESPACE: self.namespace, POD_UID: self.uid,
                    CONTAINER_NAME: name, **(labels or {})},
            annotations={RESTART_COUNT: str(attempt), **(annotations or {})},
            log_path=f"{name}/{attempt}.log",
            mounts=[api.Mount(container_path=c, host_path=h) for c, h in (mounts or {}).items()],
            linux=api.LinuxContainerConfig(resources=api.LinuxContainerResources(
                cpu_period=cpu_period, cpu_quota=cpu_quota or 0,
                memory_limit_in_bytes=memory_limit or 0)),
        )
        rt = self.cd.runtime_stub()
        cid: str = rt.CreateContainer(api.CreateContainerRequest(
            pod_sandbox_id=self.id, config=config, sandbox_config=self.config)).container_id
        self.containers.setdefault(name, []).append(cid)
        if start:
            rt.StartContainer(api.StartContainerRequest(container_id=cid))
        return cid

    def container_status(self, container_id: str) -> api.ContainerStatus:
        status: api.ContainerStatus = self.cd.runtime_stub().ContainerStatus(
            api.ContainerStatusRequest(container_id=container_id)).status
        return status

    def wait_exited(self, container_id: str, timeout: float = 10.0) -> api.ContainerStatus:
        end = time.monotonic() + timeout
        while (status := self.container_status(container_id)).state != api.CONTAINER_EXITED:
            if time.monotonic() > end:
                raise TimeoutError(f"container {container_id} still {status.state} after {timeout}s")
            time.sleep(0.05)  # poll interval
        return status

    def stop_container(self, container_id: str, timeout: int = 0) -> None:
        """timeout 0 means SIGKILL at once (busybox sleep as PID 1 ignores SIGTERM)."""
        self.cd.runtime_stub().StopContainer(
            api.StopContainerRequest(container_id=container_id, timeout=timeout))

    def remove_container(self, container_id: str) -> None:
        self.cd.runtime_stub().RemoveContainer(api.RemoveContainerRequest(container_id=container_id))
        for ids in self.containers.values():
            if container_id in ids:
                ids.remove(container_id)

    def remove(self) -> None:
        rt = self.cd.runtime_stub()
        rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=self.id))
        rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=self.id))


def run_pod(cd: Runtime, name: str, namespace: str = "default", uid: str | None = None,
            cgroup_parent: str | None = None, labels: dict | None = None,
            annotations: dict | None = None, host_network: bool = False, log_root: Path | None = None) -> Pod:
    """Run a sandbox. cgroup_parent defaults to the kubelet's cgroupfs layout
    /kubepods/burstable/pod<uid>; "" leaves it unset: the broken-sandbox case,
    which makes ListPodSandboxStats fail for every pod in 1.6.20 ("failed to
    obtain metrics for sandbox ... cgroupPath is empty"). host_network: the
    node's network namespace, as a hostNetwork pod's. `log_root`: where the
    pod's `<namespace>_<name>_<uid>` log directory goes (the kubelet's
    /var/log/pods), the lab's own logs directory by default."""
    uid = uid or str(uuid.uuid4())
    if cgroup_parent is None:
        cgroup_parent = f"/kubepods/burstable/pod{uid}"
    log_dir = (log_root or cd.base / "logs") / f"{namespace}_{name}_{uid}"
    log_dir.mkdir(parents=True, exist_ok=True)
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, namespace=namespace, uid=uid),
        hostname="" if host_network else name[:63],  # runc sets no hostname in the node's UTS namespace
        log_directory=str(log_dir),
        labels={POD_NAME: name, POD_NAMESPACE: namespace, POD_UID: uid, **(labels or {})},
        annotations=annotations or {},
        linux=api.LinuxPodSandboxConfig(cgroup_parent=cgroup_parent),
    )
    if host_network:
        config.linux.security_context.namespace_options.network = api.NODE
    sandbox_id = cd.runtime_stub().RunPodSandbox(api.RunPodSandboxRequest(config=config)).pod_sandbox_id
    return Pod(cd, sandbox_id, config)


def restart_container(pod: Pod, name: str, command: list[str], timeout: float = 10.0, **kw) -> str:
    """Do what the kubelet does on a restart: once the last attempt has exited,
    create and start attempt+1 in the same pod, keeping the exited one."""
    status = pod.wait_exited(pod.containers[name][-1], timeout)
    return pod.add_container(name, command, attempt=status.metadata.attempt + 1, **kw)
