"""Every host path goes through here, so `--host-root /host` works everywhere.

In a DaemonSet the node's filesystem is mounted at /host; tests point the root
at a fixture tree. Nothing else in the package joins a root to a path.
"""
from __future__ import annotations

import os


class HostFS:
    def __init__(self, root: str = "/"):
        self.root = os.path.abspath(root or "/")

    def path(self, host_path: str) -> str:
        """The local path of an absolute path on the host."""
        if self.root == "/":
            return host_path
        return os.path.join(self.root, host_path.lstrip("/"))

    def read_text(self, host_path: str, limit: int = 4 * 1024 * 1024) -> str:
        """Read a small text file; `limit` bounds what a hostile file costs."""
        with open(self.path(host_path), "rb") as f:
            return f.read(limit).decode("utf-8", errors="replace")

    def exists(self, host_path: str) -> bool:
        return os.path.exists(self.path(host_path))

    def __repr__(self) -> str:
        return f"HostFS({self.root!r})"
