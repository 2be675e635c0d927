"""Which PodSandboxStats failures are the runtime's passing state, not a fault.

Measured on the lab's containerd 1.6.20, 1.7.24 and 2.1.9 (tests/test_sandbox_stats_real.py;
source: pkg/cri/server/sandbox_stats_*.go in 1.x, internal/cri/server/ in 2.x):

- **A container of a ready pod has just exited** (an OOM kill, a crash): 1.6.20 and 1.7.24
  count a pod's processes by asking the task of every container CRI still lists running, and
  between the task's deletion and CRI's handling of the exit that task is gone:
  PodSandboxStats answers NOT_FOUND "task <id> not found" (1.6.20), "no running task found:
  task <id> not found" (1.7.24), or UNKNOWN "ttrpc: closed" when the task's shim went first
  (1.6.20). Seen in 1 call of ~60 around each of 10 OOM kills, for under a second each, on a
  loaded 2-core machine. 1.6.20's ListPodSandboxStats then fails whole; 1.7.16+ leaves that
  pod out of its answer (containerd commit 90c309fe2, #10013) and 1.7.20+ does the same for
  "ttrpc: closed" (610498df7); 2.0+ takes the count from the task metrics (f6e731c80) and
  never asks, so 2.1.9 showed none in 363 calls.
- **The sandbox stopped or went since it was listed**: "... is not in ready state" (UNKNOWN on
  1.6.20, UNAVAILABLE on 1.7.24 and 2.1.9), or NOT_FOUND for the sandbox itself.

Both pass by themselves in well under a refresh interval. The refresher counts them
(`cri_stats_pod_sandboxes_unavailable`) instead of failing the stats collector, so an OOM kill
does not turn into a CriCollectorFailing page (before, 1.6.20 failed it on every refresh while
the state lasted). It lasts when containerd cannot record the exit: its handler deletes the task,
then fails to checkpoint the container's status (a full or read-only disk) and keeps it RUNNING,
retrying with a back-off up to 5 minutes (all three versions; crilab.scenario.unrecorded_exit).
That is CriPodStatsUnavailable on 1.6 and 1.7, and the doctor's cri.pod_stats names the pod.
2.x never asks the task, so its stats keep answering normally for such a container: there the
cgroup reading sees it (running_without_cgroup.py, alert CriContainerRunningWithoutCgroup).
Anything else (e.g. "cgroupPath is empty": a sandbox without a cgroup parent) is a failure.
"""
from __future__ import annotations

from cri_exporter.cri import CriError

TASK_GONE = "task_gone"
SANDBOX_GONE = "sandbox_gone"
REASONS = (TASK_GONE, SANDBOX_GONE)


def unavailable_reason(err: CriError) -> str | None:
    """TASK_GONE or SANDBOX_GONE for the passing states above, None for a real failure."""
    text = str(err)
    if "ttrpc: closed" in text:
        return TASK_GONE
    if err.code == "NOT_FOUND":
        return TASK_GONE if "task " in text else SANDBOX_GONE
    if "not in ready state" in text:
        return SANDBOX_GONE
    return None
