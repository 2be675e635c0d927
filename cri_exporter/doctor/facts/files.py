"""Bounded reads of host files through HostFS."""
from __future__ import annotations

import os

from cri_exporter.hostfs import HostFS

# No config file a runtime reads is anywhere near this; a larger one is a
# mistake (or hostile) and is reported, not parsed.
MAX_CONFIG_BYTES = 1 << 20


class FileTooLarge(Exception):
    pass


def read_config(hostfs: HostFS, host_path: str, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The text of a config file; OSError when unreadable, FileTooLarge past `max_bytes`."""
    local = hostfs.path(host_path)
    size = os.path.getsize(local)
    if size > max_bytes:
        raise FileTooLarge(f"{host_path} is {size} bytes, more than the {max_bytes} a config file may be")
    return hostfs.read_text(host_path, limit=max_bytes)


def read_small(hostfs: HostFS, host_path: str) -> str | None:
    """A /proc or /sys value, stripped; None when absent or unreadable."""
    try:
        return hostfs.read_text(host_path, limit=64 * 1024).strip()
    except OSError:
        return None


def list_dir(hostfs: HostFS, host_dir: str) -> list[str]:
    """Sorted names in a host directory ([] when absent), the order Go's
    os.ReadDir and filepath.Glob give, which runtimes use for drop-ins."""
    try:
        return sorted(os.listdir(hostfs.path(host_dir)))
    except OSError:
        return []


def join(*parts: str) -> str:
    return os.path.join(*parts)


def resolve(hostfs: HostFS, host_path: str) -> str:
    """Symlinks resolved inside the host root (see HostFS.resolve)."""
    return hostfs.resolve(host_path)
