"""CNI configuration as the runtime's CNI library loads it.

libcni's ConfFiles takes *.conf, *.conflist and *.json in lexical order;
containerd (go-cni, max_conf_num = 1) uses the first one that loads and
fails on an invalid file it meets before that; CRI-O (ocicni) logs and skips
invalid files. A .conf holds one plugin, a .conflist a `plugins` list.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from cri_exporter.doctor.facts.files import FileTooLarge, list_dir, read_config
from cri_exporter.hostfs import HostFS

EXTENSIONS = (".conf", ".conflist", ".json")


@dataclass
class CniFile:
    path: str
    name: str = ""
    plugins: list[dict] = field(default_factory=list)
    error: str = ""


def _mapping(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def binaries(cni_file: CniFile) -> list[tuple[str, str]]:
    """(binary, why) for every executable libcni runs for this config: each
    plugin's `type` in chain order, its `ipam.type`, and flannel's delegate
    (`delegate.type`, default bridge, whose IPAM is host-local: flannel
    writes that into the delegated config)."""
    out: list[tuple[str, str]] = []
    for p in cni_file.plugins:
        t = str(p.get("type"))
        out.append((t, "plugin"))
        ipam = p.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type"):
            out.append((str(ipam["type"]), f"ipam of {t}"))
        if t == "flannel":
            delegate = _mapping(p.get("delegate"))
            d = str(delegate.get("type") or "bridge")
            out.append((d, "flannel's delegate"))
            dipam = _mapping(delegate.get("ipam"))
            out.append((str(dipam.get("type") or "host-local"), f"ipam of flannel's delegate {d}"))
    seen: set[str] = set()
    unique = []
    for b, why in out:
        if b not in seen:
            seen.add(b)
            unique.append((b, why))
    return unique


@dataclass
class CniConfig:
    conf_dir: str
    bin_dirs: list[str]
    files: list[CniFile] = field(default_factory=list)
    where: str = ""  # whose config named the directories ("containerd config", "CRI-O config")

    @property
    def chosen(self) -> CniFile | None:
        return next((f for f in self.files if not f.error), None)

    @property
    def bridge_name(self) -> str | None:
        """The Linux bridge the chosen config attaches pods to, if it uses the bridge plugin."""
        for plugin in self.chosen.plugins if self.chosen else ():
            if plugin.get("type") == "bridge":
                return str(plugin.get("bridge") or "cni0")  # the bridge plugin's default name
        return None


def _parse(hostfs: HostFS, path: str) -> CniFile:
    f = CniFile(path)
    try:
        data = json.loads(read_config(hostfs, path))
    except (OSError, FileTooLarge) as e:
        f.error = str(e)
        return f
    except json.JSONDecodeError as e:
        f.error = f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        return f
    if not isinstance(data, dict):
        f.error = "not a JSON object"
        return f
    f.name = str(data.get("name", ""))
    if path.endswith(".conflist"):
        plugins = data.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            f.error = "a .conflist needs a non-empty `plugins` list"
            return f
        f.plugins = [p for p in plugins if isinstance(p, dict)]
    else:
        f.plugins = [data]
    if not f.name:
        f.error = "no `name`"
    elif any(not p.get("type") for p in f.plugins):
        f.error = "a plugin has no `type`"
    elif not data.get("cniVersion"):
        f.error = "no `cniVersion`"
    return f


def load(hostfs: HostFS, conf_dir: str, bin_dirs: list[str], where: str = "") -> CniConfig:
    cfg = CniConfig(conf_dir, bin_dirs, where=where)
    for name in list_dir(hostfs, conf_dir):
        path = os.path.join(conf_dir, name)
        if name.endswith(EXTENSIONS) and hostfs.is_file(path):
            cfg.files.append(_parse(hostfs, path))
    return cfg
