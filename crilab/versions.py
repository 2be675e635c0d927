"""The containerd versions the lab runs, where each one's binaries come from,
and the config a real node of that version carries.

- 1.6: Debian 12's own package (1.6.20), installed by scripts/setup.sh.
- 1.7: trixie's (1.7.24), 2.1: sid's (2.1.9), fetched by crilab.debian into
  ~/.cache/crilab/debian once and reused. Both run over Debian 12's runc 1.1.5
  (sid's runc needs glibc 2.38).

Tests run on every version; `CRILAB_VERSIONS=2.1` (comma separated) narrows a
developer's run to some of them. CI sets nothing and runs them all.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ENV = "CRILAB_VERSIONS"


@dataclass(frozen=True)
class Version:
    name: str          # "1.6": the minor the tests are named after
    suite: str | None  # the Debian suite its .deb comes from; None: the installed package

    @property
    def major(self) -> int:
        return int(self.name.split(".")[0])

    def bin_dir(self) -> Path:
        """The directory holding this version's containerd, its shims and ctr
        (fetched and unpacked on first use)."""
        return _bin_dir(self)

    def release(self) -> str:
        """What the binary says it is, e.g. "1.7.24~ds1" (Debian's version string)."""
        out = subprocess.run([str(self.bin_dir() / "containerd"), "--version"], capture_output=True, text=True,
                             check=True, timeout=30).stdout
        return out.split()[2].lstrip("v")


VERSIONS = (Version("1.6", None), Version("1.7", "trixie"), Version("2.1", "sid"))
NAMES = [v.name for v in VERSIONS]


@functools.cache
def _bin_dir(version: Version) -> Path:
    if version.suite is None:
        from crilab.containerd import ensure_packages
        ensure_packages()
        containerd = shutil.which("containerd")
        if containerd is None:
            raise RuntimeError("containerd is not on PATH after installing Debian's package")
        return Path(containerd).resolve().parent
    from crilab.debian import Suite
    return Suite(version.suite).unpack("containerd") / "usr/bin"


def get(name: str) -> Version:
    for v in VERSIONS:
        if v.name == name:
            return v
    raise ValueError(f"unknown containerd version {name!r}; the lab has {', '.join(NAMES)}")


def selected() -> list[str]:
    """The versions to run, oldest first: all of them, or those $CRILAB_VERSIONS names."""
    wanted = [w.strip() for w in os.environ.get(ENV, "").split(",") if w.strip()]
    for w in wanted:
        get(w)  # an unknown name is an error, not an empty matrix
    return [n for n in NAMES if not wanted or n in wanted]


def render_config(version: str, *, sandbox_image: str, cni_bin_dir: str, cni_conf_dir: str,
                  root: str | None = None, state: str | None = None, address: str | None = None,
                  runc_root: str | None = None, systemd_cgroup: bool | None = None,
                  restrict_oom_score_adj: bool = True, disabled_plugins=(),
                  metrics_address: str | None = None) -> str:
    """config.toml as a node running `version` has it: version 2 with the CRI
    plugin `io.containerd.grpc.v1.cri` for 1.x; version 3 for 2.x, where CRI is
    split into `io.containerd.cri.v1.images` (the sandbox image is
    `pinned_images.sandbox`) and `io.containerd.cri.v1.runtime` (CNI with
    `bin_dirs`, runtimes, restrict_oom_score_adj). 2.x still reads a version 2
    file, migrated in memory, but that is not what its nodes carry, and 2.1
    reports `bin_dir` as deprecated (removed in 2.3)."""
    major = get(version).major
    lines = [f"version = {3 if major >= 2 else 2}"]
    if root:
        lines.append(f"root = {json.dumps(root)}")
    if state:
        lines.append(f"state = {json.dumps(state)}")
    if disabled_plugins:
        lines.append(f"disabled_plugins = {json.dumps(list(disabled_plugins))}")
    if address:
        lines += ["", "[grpc]", f"  address = {json.dumps(address)}"]
    if metrics_address:
        lines += ["", "[metrics]", f"  address = {json.dumps(metrics_address)}"]
    if major >= 2:
        runtime, images = 'plugins."io.containerd.cri.v1.runtime"', 'plugins."io.containerd.cri.v1.images"'
        lines += ["", f"[{images}.pinned_images]", f"  sandbox = {json.dumps(sandbox_image)}"]
        if restrict_oom_score_adj:
            lines += ["", f"[{runtime}]", "  restrict_oom_score_adj = true"]
        lines += ["", f"[{runtime}.cni]", f"  bin_dirs = {json.dumps([cni_bin_dir])}",
                  f"  conf_dir = {json.dumps(cni_conf_dir)}"]
    else:
        runtime = 'plugins."io.containerd.grpc.v1.cri"'
        lines += ["", f"[{runtime}]", f"  sandbox_image = {json.dumps(sandbox_image)}"]
        if restrict_oom_score_adj:
            lines.append("  restrict_oom_score_adj = true")
        lines += ["", f"[{runtime}.cni]", f"  bin_dir = {json.dumps(cni_bin_dir)}",
                  f"  conf_dir = {json.dumps(cni_conf_dir)}"]
    lines += ["", f"[{runtime}.containerd.runtimes.runc]", '  runtime_type = "io.containerd.runc.v2"']
    options = []
    if runc_root:
        options.append(f"  Root = {json.dumps(runc_root)}")
    if systemd_cgroup is not None:
        options.append(f"  SystemdCgroup = {'true' if systemd_cgroup else 'false'}")
    if options:
        lines += ["", f"[{runtime}.containerd.runtimes.runc.options]", *options]
    return "\n".join(lines) + "\n"
