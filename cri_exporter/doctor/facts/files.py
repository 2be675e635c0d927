"""Bounded reads of host files through HostFS.

read_config records each path on the HostFS (HostFS.recorded): the support
bundle holds exactly the config files the checks read, nothing else from a
directory (a stray kubeconfig beside the CNI configs is not the doctor's to
hand out)."""
from __future__ import annotations

import os

from cri_exporter import confined_read
from cri_exporter.hostfs import HostFS

# No config file a runtime reads is anywhere near this; a larger one is a
# mistake (or hostile) and is reported, not parsed.
MAX_CONFIG_BYTES = 1 << 20


class FileTooLarge(Exception):
    pass


def read_config(hostfs: HostFS, host_path: str, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The text of a config file; OSError when unreadable, FileTooLarge past `max_bytes`,
    DeniedByConfinement when serve's confinement kept it closed (confined_read.py).

    At most one byte past the limit is read, whatever the file claims to be
    (a FIFO, a sparse 10 GB file, one that grows while read)."""
    try:
        data = hostfs.read_bytes(host_path, max_bytes + 1, record=True)
    except PermissionError as err:
        confined_read.check(hostfs.root, host_path, err)
        raise
    if len(data) > max_bytes:
        try:
            size = f"{os.stat(hostfs.path(host_path)).st_size} bytes"
        except OSError:
            size = "larger"
        raise FileTooLarge(f"{host_path} is {size}, more than the {max_bytes} bytes a config file may be")
    return data.decode("utf-8", errors="replace")


def read_small(hostfs: HostFS, host_path: str) -> str | None:
    """A /proc or /sys value, stripped; None when absent or unreadable."""
    try:
        return hostfs.read_text(host_path, limit=64 * 1024).strip()
    except OSError:
        return None


def list_dir(hostfs: HostFS, host_dir: str) -> list[str]:
    """Sorted names in a host directory ([] when absent), the order Go's
    os.ReadDir and filepath.Glob give, which runtimes use for drop-ins.
    Sorted as bytes, as Go compares strings; a name that is not UTF-8 stays
    in its surrogate-escaped form (os.fsencode gives its bytes back)."""
    try:
        return sorted(os.listdir(hostfs.path(host_dir)), key=os.fsencode)
    except OSError:
        return []


def join(*parts: str) -> str:
    return os.path.join(*parts)


def resolve(hostfs: HostFS, host_path: str) -> str:
    """Symlinks resolved inside the host root (see HostFS.resolve)."""
    return hostfs.resolve(host_path)
