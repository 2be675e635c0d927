"""Every host path goes through here, so `--host-root /host` works everywhere
and nothing outside the root is ever read.

In a DaemonSet the node's filesystem is mounted at /host; tests point the root
at a fixture tree. Nothing else in the package joins a root to a path.

Confinement: under /host an absolute symlink such as /var/run -> /run, or a
planted /etc/containerd/config.toml -> /etc/shadow, would otherwise resolve
in the agent's own container (its service account token lives there), and a
path with `..` components could climb out of the root. path() resolves every
component inside the root, as chroot would: absolute link targets restart at
the root, `..` stops at it, and a chain of more than 40 links is ELOOP, like
the kernel's limit. Files are then opened with O_NOFOLLOW, so a link swapped
in after resolution fails instead of being followed.
"""
from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable

MAX_LINKS = 40

# Kernel filesystems hold no symlinks a user can plant; the few links the kernel
# makes there are relative and stay inside (/sys/dev/block/8:0 -> ../../devices/...),
# except procfs' magic links, which jump anywhere and are never walked through.
_KERNEL_PREFIXES = ("/proc/", "/sys/")
_MAGIC_LINKS = frozenset(("cwd", "root", "exe", "fd", "map_files"))


class HostFS:
    def __init__(self, root: str = "/"):
        self.root = os.path.abspath(root or "/")
        self._kernel_roots: dict[str, str] = {}
        self._lock = threading.Lock()
        # Host paths opened with record=True, in order (the doctor's config
        # reads: its support bundle holds exactly the files its checks read).
        self.recorded: dict[str, None] = {}
        # pin_process(): magic links read, and process roots held open, before a confinement.
        self._pinned_links: dict[str, str | OSError] = {}
        self._pinned_roots: dict[int, int] = {}

    def path(self, host_path: str) -> str:
        """The local path of an absolute path on the host, confined to the root."""
        if self.root == "/":
            return host_path
        if host_path.startswith(_KERNEL_PREFIXES):
            fast = self._kernel_path(host_path)
            if fast is not None:
                return fast
        return self.resolve(host_path)

    # Kept as the name callers use where following links is the point (sockets).
    def resolve(self, host_path: str, max_links: int = MAX_LINKS) -> str:
        """The local path of `host_path` with symlinks resolved INSIDE the root.

        Raises OSError(ELOOP) past `max_links` links, so a link loop or a long
        chain can neither hang the resolver nor end in a link left unresolved.
        """
        if self.root == "/":
            return host_path
        parts = [p for p in host_path.split("/") if p]
        parts.reverse()  # a stack: pop() takes the next component
        done: list[str] = []
        links = 0
        while parts:
            part = parts.pop()
            if part == "..":
                if done:
                    done.pop()
                continue
            if part == ".":
                continue
            local = os.path.join(self.root, *done, part)
            try:
                target = os.readlink(local)
            except OSError:  # not a link, or absent: either way a plain component
                done.append(part)
                continue
            links += 1
            if links > max_links:
                raise OSError(errno.ELOOP, f"more than {max_links} symbolic links", host_path)
            if target.startswith("/"):
                done = []
            parts.extend(reversed([p for p in target.split("/") if p]))
        return os.path.join(self.root, *done)

    def readlink(self, host_path: str) -> str:
        """The target of the link at `host_path` itself (its parent resolved
        inside the root, the link not followed): /proc/<pid>/cwd and the like."""
        pinned = self._pinned_links.get(host_path)
        if isinstance(pinned, OSError):
            raise pinned
        if pinned is not None:
            return pinned
        parent, _, name = host_path.rstrip("/").rpartition("/")
        return os.readlink(os.path.join(self.path(parent or "/"), name))

    def pin_process(self, pid: int) -> None:
        """Read /proc/<pid>/cwd and exe, and hold /proc/<pid>/root open, now.
        Landlock denies a confined process (the hand-run doctor confines
        itself: confine_doctor.py) those of every process outside its domain,
        even as root; readlink() and proc_root() answer from here afterwards."""
        for link in ("cwd", "exe"):
            host_path = f"/proc/{pid}/{link}"
            try:
                self._pinned_links[host_path] = self.readlink(host_path)
            except OSError as err:
                self._pinned_links[host_path] = err
        if pid not in self._pinned_roots:
            try:
                self._pinned_roots[pid] = os.open(self.proc_root(pid), os.O_PATH | os.O_CLOEXEC)
            except OSError:
                pass

    def proc_root(self, pid: int) -> str:
        """A local path of the process's root directory (/proc/<pid>/root),
        through its pinned descriptor where there is one (following
        /proc/self/fd/N asks for no right over the other process)."""
        fd = self._pinned_roots.get(pid)
        return f"/proc/self/fd/{fd}" if fd is not None else os.path.join(self.root, "proc", str(pid), "root")

    def unpin(self) -> None:
        for fd in self._pinned_roots.values():
            os.close(fd)
        self._pinned_roots.clear()
        self._pinned_links.clear()

    def _kernel_path(self, host_path: str) -> str | None:
        """/proc and /sys paths with only their mount point resolved (once): the
        scrape reads two /proc files per pod, and resolving every component
        would cost a readlink each. None where the fast way does not apply."""
        top, _, rest = host_path[1:].partition("/")
        names = rest.split("/")
        if ".." in names or (top == "proc" and _MAGIC_LINKS.intersection(names)):
            return None
        base = self._kernel_roots.get(top)
        if base is None:
            try:
                base = self.resolve("/" + top)
            except OSError:
                return None
            with self._lock:
                self._kernel_roots[top] = base
        return f"{base}/{rest}"

    def read_text(self, host_path: str, limit: int = 4 * 1024 * 1024) -> str:
        """Read a small text file; `limit` bounds what a hostile file costs.

        Plain os.read in 64 KiB steps: a buffered f.read(limit) allocates the
        whole limit first, and the scrape reads two /proc files per pod.
        O_NONBLOCK: a FIFO planted where a file is expected reads as empty
        instead of hanging the reader until someone writes to it."""
        return self.read_bytes(host_path, limit).decode("utf-8", errors="replace")

    def read_bytes(self, host_path: str, limit: int, record: bool = False) -> bytes:
        fd = self.open(host_path, record)
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
        return b"".join(chunks)

    def open(self, host_path: str, record: bool = False) -> int:
        """A read-only fd of a host file; the caller closes it."""
        if record:
            self.recorded.setdefault(os.path.normpath(host_path), None)
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
        if self.root != "/":
            flags |= os.O_NOFOLLOW
        return os.open(self.path(host_path), flags)

    def exists(self, host_path: str) -> bool:
        return self._test(os.path.exists, host_path)

    def is_file(self, host_path: str) -> bool:
        return self._test(os.path.isfile, host_path)

    def is_dir(self, host_path: str) -> bool:
        return self._test(os.path.isdir, host_path)

    def is_executable(self, host_path: str) -> bool:
        return self._test(lambda local: os.access(local, os.X_OK), host_path)

    def _test(self, test: Callable[[str], bool], host_path: str) -> bool:
        try:
            return test(self.path(host_path))
        except OSError:  # ELOOP from path(): a link loop is no file
            return False

    def __repr__(self) -> str:
        return f"HostFS({self.root!r})"
