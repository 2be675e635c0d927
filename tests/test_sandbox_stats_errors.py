"""sandbox_stats_errors.unavailable_reason on the answers containerd gave in the lab (1.6.20, 1.7.24,
2.1.9; tests/test_sandbox_stats_real.py makes most of them on demand), as the client words them.
The exit window's answers cannot be made on demand: they were seen in a loop of stats calls around
OOM kills and are kept here verbatim (ids shortened)."""
from __future__ import annotations

import grpc
import pytest

from cri_exporter.cri.client import explain_rpc_error
from cri_exporter.sandbox_stats_errors import SANDBOX_GONE, TASK_GONE, unavailable_reason

SB, C = "00652fa5a830", "6f6de79e8355"


class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


CASES = [
    # a container of the pod has just exited, its task deleted before CRI handled the exit
    ("1.6.20", grpc.StatusCode.NOT_FOUND, f"failed to decode pod sandbox metrics {SB}: task {C} not found: not found",
     TASK_GONE),
    ("1.7.24", grpc.StatusCode.NOT_FOUND,
     f"failed to decode pod sandbox metrics {SB}: no running task found: task {C} not found: not found", TASK_GONE),
    ("1.6.20", grpc.StatusCode.UNKNOWN,
     f'failed to decode sandbox container metrics for sandbox "{SB}": ttrpc: closed: unknown', TASK_GONE),
    # stopped since it was listed, or gone
    ("1.6.20", grpc.StatusCode.UNKNOWN, f'failed to decode pod sandbox metrics {SB}: failed to get pod sandbox stats '
     f'since sandbox container "{SB}" is not in ready state', SANDBOX_GONE),
    ("2.1.9", grpc.StatusCode.UNAVAILABLE, f'failed to decode pod sandbox metrics {SB}: failed to get pod sandbox stats '
     f'since sandbox container "{SB}" is not in ready state: unavailable', SANDBOX_GONE),
    ("1.7.24", grpc.StatusCode.NOT_FOUND, f"an error occurred when trying to find sandbox {SB}: not found", SANDBOX_GONE),
    # failures
    ("1.6.20", grpc.StatusCode.UNKNOWN, f"failed getting metrics for sandbox {SB}: failed to get cgroup metrics for "
     f"sandbox {SB} because cgroupPath is empty", None),
    ("any", grpc.StatusCode.UNAVAILABLE, "connection refused", None),
    ("any", grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", None),
]


@pytest.mark.parametrize("version, code, details, reason", CASES)
def test_unavailable_reason(version, code, details, reason, tmp_path):
    socket = tmp_path / "containerd.sock"  # exists: UNAVAILABLE is then worded as the runtime's answer
    socket.touch()
    err = explain_rpc_error("PodSandboxStats", f"unix://{socket}", _RpcError(code, details), 5.0)
    assert unavailable_reason(err) == reason, (version, str(err))
