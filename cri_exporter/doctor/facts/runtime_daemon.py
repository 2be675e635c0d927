"""Which process is the runtime behind a CRI socket, answered one way for the
doctor (containerd.locate, crio.locate) and for the exporter's runtime
process sampler (cri_exporter/runtime_processes.py), which imports this fact
module and the readers it uses, never the checks.

- The socket a daemon listens on: containerd's `-a`, else `[grpc] address`
  of the config it was started with, imports followed and a relative `-c`
  taken against its working directory (containerd.started_with); CRI-O's
  `--listen`, else `[crio.api] listen` of its file and drop-ins
  (crio.load_flags); cri-dockerd's `--container-runtime-endpoint`, else its
  default.
- Whether that socket is the endpoint's: containerd.why_not_serving (the
  path looked up in the process's own mount namespace through
  /proc/<pid>/root where that can be read, else the same inode or name and
  not from a nested pid namespace; and the socket's owner is the process's
  user).
"""
from __future__ import annotations

from cri_exporter.doctor.facts import containerd, crio, procfs
from cri_exporter.hostfs import HostFS

# comm (at most 15 characters) of the processes that may serve a CRI socket
# (k3s and RKE2 run containerd as a child process named containerd).
DAEMON_NAMES = ("containerd", "crio", "cri-dockerd")
CRI_DOCKERD_DEFAULT_SOCKET = "/run/cri-dockerd.sock"


def listen_address(hostfs: HostFS, proc: procfs.Process, version: str | None = None) -> str:
    """The host path of the socket `proc` says it listens on; "" when it
    names none (cri-dockerd's `fd://`, socket activation). `version` is
    containerd's CRI Version answer where known (how it resolves import globs)."""
    if proc.comm == "crio":
        flags = crio.parse_args(proc.args[1:])
        return crio.api_socket(crio.load_flags(hostfs, flags, f"on the command line of crio pid {proc.pid}"))
    if proc.comm == "cri-dockerd":
        endpoint = _go_flag(proc.args[1:], "container-runtime-endpoint") or CRI_DOCKERD_DEFAULT_SOCKET
        path = endpoint.removeprefix("unix://")
        return path if path.startswith("/") else ""
    return containerd.started_with(hostfs, proc, version).address


def serves(hostfs: HostFS, proc: procfs.Process, address: str, endpoint_local: str | None) -> bool:
    """Whether `proc`, listening on `address` (listen_address), is the runtime behind `endpoint_local`."""
    return bool(address) and containerd.serves(hostfs, proc, address, endpoint_local)


def _go_flag(argv, name: str) -> str | None:
    """`--name x` / `--name=x` / `-name x` (cobra and Go flag styles); the last one wins."""
    value = None
    for i, arg in enumerate(argv):
        flag, eq, rest = arg.lstrip("-").partition("=")
        if arg.startswith("-") and flag == name:
            if eq:
                value = rest
            elif i + 1 < len(argv):
                value = argv[i + 1]
    return value
