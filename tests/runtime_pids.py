"""The host pids of the lab's containers and sandboxes, as the runtime itself
names them (CRI's verbose status): the ground truth the real-runtime tests
read /proc with. Shared by test modules, so none imports another."""
from __future__ import annotations

import json

from cri_exporter.cri import api_pb2 as api
from crilab import Containerd


def init_pid(cd: Containerd, container_id: str) -> int:
    """The container's init process (verbose ContainerStatus's info.pid)."""
    info = cd.runtime_stub().ContainerStatus(
        api.ContainerStatusRequest(container_id=container_id, verbose=True)).info["info"]
    return int(json.loads(info)["pid"])


def sandbox_pid(cd: Containerd, sandbox_id: str) -> int:
    """The sandbox's pause process, which holds the pod's namespaces (verbose PodSandboxStatus's info.pid)."""
    info = cd.runtime_stub().PodSandboxStatus(
        api.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True)).info["info"]
    return int(json.loads(info)["pid"])
