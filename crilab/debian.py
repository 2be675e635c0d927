"""Binaries from other Debian suites, without touching the system's packages.

Debian 12 installs containerd 1.6.20 and Prometheus 2.42; trixie has
containerd 1.7, sid containerd 2.x and Prometheus 3. Their .deb files come
from the machine's own Debian mirror through a private apt state (sources
list, lists and cache dirs of our own), and are unpacked with `dpkg-deb -x`
into a cache directory outside the repository, so a rerun fetches nothing.
The Go binaries are static; what a .deb depends on (runc, libc6) Debian 12
already has, except sid's runc (needs glibc 2.38): Debian 12's runc 1.1.5
runs under containerd 2.1.9 (seen 2026-11-25).
"""
from __future__ import annotations

import fcntl
import glob
import os
import re
import subprocess
from pathlib import Path

from crilab.images import DEFAULT_CACHE

DEBIAN_CACHE = Path(os.environ.get("CRILAB_DEBIAN_CACHE", DEFAULT_CACHE / "debian"))
SOURCES = "/etc/apt/sources.list.d/debian.sources"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def mirror() -> str:
    """The machine's own Debian mirror (deb822 `URIs:` of its sources), else deb.debian.org."""
    try:
        with open(SOURCES) as f:
            for line in f:
                if line.startswith("URIs:"):
                    return line.split()[1]
    except OSError:
        pass
    return FALLBACK_MIRROR


class Suite:
    """One Debian suite's packages, fetched and unpacked on demand.

    `unpack("containerd")` returns a directory holding the package's files
    (`usr/bin/containerd`, ...). Several processes may ask at once: a lock
    file serialises the fetch, and an unpacked package is reused as is.
    """

    def __init__(self, name: str, cache: Path = DEBIAN_CACHE):
        self.name = name
        self.base = Path(cache) / name
        self._apt = [
            f"-oDir::Etc::sourcelist={self.base}/sources.list", "-oDir::Etc::sourceparts=-",
            f"-oDir::State::Lists={self.base}/lists", f"-oDir::Cache={self.base}/cache",
            "-oAPT::Sandbox::User=root", "-qq",
        ]

    def unpacked(self, package: str) -> Path | None:
        """The unpacked directory of `package` if it was fetched before."""
        found = sorted(glob.glob(f"{self.base}/x/{package}_*/.done"))
        return Path(found[-1]).parent if found else None

    def unpack(self, package: str) -> Path:
        done = self.unpacked(package)
        if done is not None:
            return done
        self.base.mkdir(parents=True, exist_ok=True)
        with open(self.base / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            done = self.unpacked(package)  # another process may have fetched it meanwhile
            if done is not None:
                return done
            deb = self._download(package)
            m = re.match(rf"{re.escape(package)}_([^_]+)_", deb.name)
            if m is None:
                raise RuntimeError(f"apt-get download of {package} gave {deb.name}, not {package}_<version>_<arch>.deb")
            version = m.group(1)
            target = self.base / "x" / f"{package}_{version}"
            subprocess.run(["rm", "-rf", str(target)], check=True)
            target.mkdir(parents=True)
            _run(["dpkg-deb", "-x", str(deb), str(target)], f"unpacking {deb.name}")
            (target / ".done").write_text(deb.name + "\n")
            return target

    def depends(self, package: str) -> list[str]:
        """The packages `package` depends on in this suite, from a fresh package list
        (e.g. the versioned kernel behind linux-image-amd64)."""
        self.base.mkdir(parents=True, exist_ok=True)
        with open(self.base / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._update()
            out = subprocess.run(["apt-cache", *self._apt, "depends", f"{package}/{self.name}"],
                                 check=True, capture_output=True, text=True).stdout
        return [line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.strip().startswith("Depends:")]

    def _update(self) -> None:
        for d in ("lists/partial", "cache/archives/partial", "debs"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        (self.base / "sources.list").write_text(f"deb [signed-by={KEYRING}] {mirror()} {self.name} main\n")
        _run(["apt-get", *self._apt, "update"], f"apt-get update for {self.name}")

    def _download(self, package: str) -> Path:
        self._update()
        debs = self.base / "debs"
        for old in debs.glob(f"{package}_*.deb"):
            old.unlink()
        _run(["apt-get", *self._apt, "download", f"{package}/{self.name}"], f"downloading {package}/{self.name}",
             cwd=debs)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            raise RuntimeError(f"apt-get download {package}/{self.name} left no .deb in {debs}")
        return found[-1]


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=cwd,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), timeout=600)
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", None) or e
        raise RuntimeError(f"{what} failed: {detail}") from e
