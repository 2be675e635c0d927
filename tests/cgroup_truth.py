"""Ground truth read straight from cgroup v1 files of a container on this machine
(cgroupfs driver: /sys/fs/cgroup/<controller>/kubepods/burstable/pod<uid>/<id>)."""
from __future__ import annotations

import os
from pathlib import Path


def cgroup_dir(controller: str, pod_uid: str, container_id: str | None = None) -> Path:
    base = Path("/sys/fs/cgroup") / controller / "kubepods" / "burstable" / f"pod{pod_uid}"
    return base / container_id if container_id else base


def cpu_usage_seconds(pod_uid: str, container_id: str | None = None) -> float:
    return int((cgroup_dir("cpuacct", pod_uid, container_id) / "cpuacct.usage").read_text()) / 1e9


def memory_stat(pod_uid: str, container_id: str | None = None) -> dict[str, int]:
    text = (cgroup_dir("memory", pod_uid, container_id) / "memory.stat").read_text()
    return {k: int(v) for k, v in (line.split() for line in text.splitlines())}


def working_set_bytes(pod_uid: str, container_id: str | None = None) -> int:
    """As the kubelet and containerd compute it: usage minus inactive file cache."""
    usage = int((cgroup_dir("memory", pod_uid, container_id) / "memory.usage_in_bytes").read_text())
    inactive = memory_stat(pod_uid, container_id)["total_inactive_file"]
    return max(0, usage - inactive)


def cpu_stat(pod_uid: str, container_id: str) -> dict[str, int]:
    text = (cgroup_dir("cpu", pod_uid, container_id) / "cpu.stat").read_text()
    return {k: int(v) for k, v in (line.split() for line in text.splitlines())}


def cpu_user_system_seconds(pod_uid: str, container_id: str | None = None) -> tuple[float, float]:
    """cpuacct.stat user and system, which count USER_HZ ticks (sysconf SC_CLK_TCK)."""
    text = (cgroup_dir("cpuacct", pod_uid, container_id) / "cpuacct.stat").read_text()
    ticks = {k: int(v) for k, v in (line.split() for line in text.splitlines())}
    hz = os.sysconf("SC_CLK_TCK")
    return ticks["user"] / hz, ticks["system"] / hz


def memory_max_usage_bytes(pod_uid: str, container_id: str | None = None) -> int:
    return int((cgroup_dir("memory", pod_uid, container_id) / "memory.max_usage_in_bytes").read_text())
