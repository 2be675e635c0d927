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

    def resolve(self, host_path: str, max_links: int = 40) -> str:
        """The local path of `host_path` with symlinks resolved INSIDE the root.

        path() only prefixes the root; under /host an absolute symlink such as
        /var/run -> /run would resolve in the agent's own container, and
        /host/var/run/containerd/containerd.sock would point at the agent's
        /run. Sockets and /var/run paths go through here; hot paths (cgroup
        files) use path(), which costs no syscalls.
        """
        if self.root == "/":
            return host_path
        parts = [p for p in host_path.split("/") if p]
        done: list[str] = []
        links = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            if part == ".":
                continue
            local = os.path.join(self.root, *done, part)
            if os.path.islink(local) and links < max_links:
                links += 1
                target = os.readlink(local)
                if target.startswith("/"):
                    done = []
                parts = [p for p in target.split("/") if p] + parts
                continue
            done.append(part)
        return os.path.join(self.root, *done)

    def read_text(self, host_path: str, limit: int = 4 * 1024 * 1024) -> str:
        """Read a small text file; `limit` bounds what a hostile file costs.

        Plain os.read in 64 KiB steps: a buffered f.read(limit) allocates the
        whole limit first, and the scrape reads two /proc files per pod.
        O_NONBLOCK: a FIFO planted where a file is expected reads as empty
        instead of hanging the reader until someone writes to it."""
        fd = os.open(self.path(host_path), os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            chunks = []
            size = 0
            while size < limit:
                chunk = os.read(fd, min(65536, limit - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
        return b"".join(chunks).decode("utf-8", errors="replace")

    def exists(self, host_path: str) -> bool:
        return os.path.exists(self.path(host_path))

    def __repr__(self) -> str:
        return f"HostFS({self.root!r})"
