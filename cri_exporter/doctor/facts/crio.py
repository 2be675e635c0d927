"""CRI-O's configuration read the way CRI-O reads it (crio 1.2x-1.3x):
/etc/crio/crio.conf first, then every file in /etc/crio/crio.conf.d in
lexical order; each file overrides only the keys it sets, so the last file
setting a key wins (man crio.conf.d(5))."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from cri_exporter.doctor.facts.containerd import ConfigError, parse_toml
from cri_exporter.doctor.facts.files import list_dir
from cri_exporter.hostfs import HostFS

CONFIG_PATH = "/etc/crio/crio.conf"
DROPIN_DIR = "/etc/crio/crio.conf.d"

# CRI-O defaults for keys the doctor looks at (crio 1.31).
DEFAULTS = {
    ("crio.runtime", "cgroup_manager"): "systemd",
    ("crio.runtime", "conmon_cgroup"): "",
    ("crio.image", "pause_image"): "registry.k8s.io/pause:3.10",
    ("crio.network", "network_dir"): "/etc/cni/net.d/",
    ("crio.network", "plugin_dirs"): ["/opt/cni/bin/"],
}


@dataclass
class CrioConfig:
    files: list[str] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)
    # (table, key) -> (value, file that set it)
    values: dict[tuple[str, str], tuple[object, str]] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return bool(self.files)

    def get(self, table: str, key: str):
        """(value, where): `where` is the file that set it or "default"."""
        if (table, key) in self.values:
            return self.values[(table, key)]
        return DEFAULTS.get((table, key)), "default"


def _flatten(data: dict, out: dict, origin: str) -> None:
    """Record every key of [crio] and [crio.<table>] with the file that set
    it; deeper tables ([crio.runtime.runtimes.runc]) stay whole values."""
    crio = data.get("crio")
    if not isinstance(crio, dict):
        return
    for key, value in crio.items():
        if isinstance(value, dict):
            for sub_key, sub_value in value.items():
                out[(f"crio.{key}", sub_key)] = (sub_value, origin)
        else:
            out[("crio", key)] = (value, origin)


def load(hostfs: HostFS) -> CrioConfig:
    cfg = CrioConfig()
    paths = [CONFIG_PATH] if hostfs.exists(CONFIG_PATH) else []
    paths += [
        os.path.join(DROPIN_DIR, n)
        for n in list_dir(hostfs, DROPIN_DIR)
        if os.path.isfile(hostfs.path(os.path.join(DROPIN_DIR, n)))
    ]
    for p in paths:
        cfg.files.append(p)
        data, err = parse_toml(hostfs, p)
        if err:
            cfg.errors.append(err)
            continue
        _flatten(data, cfg.values, p)
    return cfg
