"""Bounded reads of host files through HostFS.

read_config records each path on the HostFS (HostFS.recorded): the support
bundle holds exactly the config files the checks read, nothing else from a
directory (a stray kubeconfig beside the CNI configs is not the doctor's to
hand out)."""
from __future__ import annotations

import os
import stat

from cri_exporter.hostfs import HostFS

# No config file a runtime reads is anywhere near this; a larger one is a
# mistake (or hostile) and is reported, not parsed.
MAX_CONFIG_BYTES = 1 << 20


class FileTooLarge(Exception):
    pass


def read_config(hostfs: HostFS, host_path: str, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The text of a config file; OSError when unreadable, FileTooLarge past `max_bytes`.

    The size comes from the open file (fstat), not from a stat of the path
    before opening it, so what is measured is what is read."""
    fd = hostfs.open(host_path, record=True)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(f"{host_path} is a directory")
        if st.st_size > max_bytes:
            raise FileTooLarge(f"{host_path} is {st.st_size} bytes, more than the {max_bytes} a config file may be")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(65536, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > max_bytes:  # a FIFO or a file that grew while read
        raise FileTooLarge(f"{host_path} is more than the {max_bytes} bytes a config file may be")
    return b"".join(chunks).decode("utf-8", errors="replace")


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
