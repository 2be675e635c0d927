"""CRI-O's configuration read the way CRI-O reads it (crio 1.2x-1.3x):
/etc/crio/crio.conf first, then every file in /etc/crio/crio.conf.d in
lexical order; each file overrides only the keys it sets, so the last file
setting a key wins (man crio.conf.d(5))."""
from __future__ import annotations

import http.client
import os
import socket
import tomllib
from dataclasses import dataclass, field

from cri_exporter.doctor.facts.containerd import ConfigError, parse_toml
from cri_exporter.doctor.facts.files import list_dir
from cri_exporter.hostfs import HostFS

CONFIG_PATH = "/etc/crio/crio.conf"
DROPIN_DIR = "/etc/crio/crio.conf.d"
# CRI-O serves CRI (gRPC) and its own HTTP API on this one socket (cmux
# splits them by protocol); `crio status config` is GET /config on it.
DEFAULT_SOCKET = "/var/run/crio/crio.sock"
RUNNING_CONFIG_LIMIT = 4 * 1024 * 1024

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
    it; deeper tables stay whole values, except the runtimes table: CRI-O
    decodes each drop-in onto the config so far, so a drop-in adds runtime
    handlers by name (replacing only a handler it names again)."""
    crio = data.get("crio")
    if not isinstance(crio, dict):
        return
    for key, value in crio.items():
        if isinstance(value, dict):
            for sub_key, sub_value in value.items():
                if (key, sub_key) == ("runtime", "runtimes") and isinstance(sub_value, dict):
                    before, _ = out.get(("crio.runtime", "runtimes"), ({}, origin))
                    sub_value = {**(before if isinstance(before, dict) else {}), **sub_value}
                out[(f"crio.{key}", sub_key)] = (sub_value, origin)
        else:
            out[("crio", key)] = (value, origin)


def load(hostfs: HostFS) -> CrioConfig:
    cfg = CrioConfig()
    paths = [CONFIG_PATH] if hostfs.exists(CONFIG_PATH) else []
    paths += [
        os.path.join(DROPIN_DIR, n)
        for n in list_dir(hostfs, DROPIN_DIR)
        if hostfs.is_file(os.path.join(DROPIN_DIR, n))
    ]
    for p in paths:
        cfg.files.append(p)
        data, err = parse_toml(hostfs, p)
        if err:
            cfg.errors.append(err)
            continue
        _flatten(data, cfg.values, p)
    return cfg


def api_socket(cfg: CrioConfig) -> str:
    """The host path of CRI-O's socket: [crio.api] listen, or the default."""
    listen, _ = cfg.get("crio.api", "listen")
    return listen if isinstance(listen, str) and listen.startswith("/") else DEFAULT_SOCKET


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def running_config(hostfs: HostFS, socket_path: str, timeout: float = 2.0) -> tuple[dict | None, str]:
    """(the config the running CRI-O uses, "") from GET /config on its
    socket (TOML, the same text `crio status config` prints), or (None, why
    not). The socket is resolved inside the host root (/var/run -> /run)."""
    try:
        conn = _UnixHTTPConnection(hostfs.resolve(socket_path), timeout)
    except OSError as e:
        return None, f"CRI-O API at {socket_path} unreachable ({e.__class__.__name__}: {e})"
    try:
        conn.request("GET", "/config", headers={"Host": "crio"})
        resp = conn.getresponse()
        body = resp.read(RUNNING_CONFIG_LIMIT + 1)
        if resp.status != 200:
            return None, f"GET /config on {socket_path} answered HTTP {resp.status}"
    except (OSError, http.client.HTTPException) as e:
        return None, f"CRI-O API at {socket_path} unreachable ({e.__class__.__name__}: {e})"
    finally:
        conn.close()
    if len(body) > RUNNING_CONFIG_LIMIT:
        return None, f"GET /config on {socket_path} answered more than {RUNNING_CONFIG_LIMIT} bytes"
    try:
        data = tomllib.loads(body.decode("utf-8", errors="replace"))
    except tomllib.TOMLDecodeError as e:
        return None, f"GET /config on {socket_path} answered TOML that does not parse ({e})"
    if not isinstance(data.get("crio"), dict):
        return None, f"GET /config on {socket_path} answered no [crio] table"
    return data, ""
