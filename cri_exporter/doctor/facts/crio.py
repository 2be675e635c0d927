"""CRI-O's configuration read the way CRI-O reads it (crio 1.2x-1.3x,
internal/criocli mergeConfig): the file of `--config`/`-c` (default
/etc/crio/crio.conf; "" skips it), then every file under `--config-dir`/`-d`
(default /etc/crio/crio.conf.d), walked recursively in lexical order
(filepath.Walk); each file overrides only the keys it sets, so the last file
setting a key wins (man crio.conf.d(5)). Command-line flags such as
`--cgroup-manager` then override every file."""
from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field

from cri_exporter.doctor.facts import procfs, systemd
from cri_exporter.doctor.facts.containerd import serves, sole_runtime
from cri_exporter.doctor.facts.files import list_dir
from cri_exporter.doctor.facts.toml import ConfigError, parse_toml
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


def _walk(hostfs: HostFS, directory: str) -> list[str]:
    """Files under `directory` in filepath.Walk's order: names sorted, each
    subdirectory walked where its name falls."""
    out: list[str] = []
    try:
        parent = hostfs.path(directory)
    except OSError:
        return out
    for name in list_dir(hostfs, directory):
        path = os.path.join(directory, name)
        # Walk does not follow linked directories (Lstat); a linked file is read through its link.
        if not os.path.islink(os.path.join(parent, name)) and hostfs.is_dir(path):
            out += _walk(hostfs, path)
        elif hostfs.is_file(path):
            out.append(path)
    return out


# Command-line flags that override a config key the doctor reads.
FLAG_KEYS = {
    "cgroup-manager": ("crio.runtime", "cgroup_manager"),
    "conmon-cgroup": ("crio.runtime", "conmon_cgroup"),
    "pause-image": ("crio.image", "pause_image"),
    "listen": ("crio.api", "listen"),
    "cni-config-dir": ("crio.network", "network_dir"),
    "cni-plugin-dir": ("crio.network", "plugin_dirs"),
}
_LIST_FLAGS = ("cni-plugin-dir",)


def parse_args(argv) -> dict[str, list[str]]:
    """`--name value`, `--name=value`, `-c value` from crio's argv (without
    argv[0]), every occurrence kept. crio's flags are read by urfave/cli; a
    word after a boolean flag is taken as its value only if it is not a flag
    itself, which is all the doctor needs for the string flags it reads."""
    flags: dict[str, list[str]] = {}
    aliases = {"c": "config", "d": "config-dir"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-"):
            break
        name, eq, value = arg.lstrip("-").partition("=")
        if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            i += 1
            value = argv[i]
        flags.setdefault(aliases.get(name, name), []).append(value)
        i += 1
    return flags


def load(hostfs: HostFS, config_path: str = CONFIG_PATH, dropin_dir: str = DROPIN_DIR,
         flags: dict[str, list[str]] | None = None, flags_origin: str = "") -> CrioConfig:
    cfg = CrioConfig()
    paths = [config_path] if config_path and hostfs.exists(config_path) else []
    paths += _walk(hostfs, dropin_dir) if dropin_dir else []
    for p in paths:
        cfg.files.append(p)
        data, err = parse_toml(hostfs, p)
        if err:
            cfg.errors.append(err)
            continue
        _flatten(data, cfg.values, p)
    for flag, values in (flags or {}).items():
        if flag in FLAG_KEYS:
            value = [v for item in values for v in item.split(",")] if flag in _LIST_FLAGS else values[-1]
            cfg.values[FLAG_KEYS[flag]] = (value, f"--{flag} {flags_origin}".rstrip())
    return cfg


@dataclass
class Location:
    """The files the CRI-O behind the endpoint reads, and how the doctor knows."""

    config: CrioConfig
    config_path: str
    dropin_dir: str
    how: str
    process: procfs.Process | None = None


def locate(hostfs: HostFS, processes: list[procfs.Process], endpoint_local: str | None) -> Location:
    """The crio process serving the endpoint (its command line names its
    files), else crio.service's ExecStart, else the defaults."""
    sole = sole_runtime(processes, "crio", endpoint_local)
    for proc in (p for p in processes if p.comm == "crio"):
        flags = parse_args(proc.args[1:])
        cfg = load_flags(hostfs, flags, f"on the command line of crio pid {proc.pid}")
        if proc is sole or serves(hostfs, proc, api_socket(cfg), endpoint_local):
            how = (f"the command line of crio pid {proc.pid}" if {"config", "config-dir"} & flags.keys()
                   else f"crio pid {proc.pid} was started without --config/--config-dir: the defaults")
            return Location(cfg, _last(flags, "config", CONFIG_PATH), _last(flags, "config-dir", DROPIN_DIR), how, proc)
    unit = systemd.read_unit(hostfs, "crio.service")
    argv = systemd.exec_start(hostfs, unit)
    if argv:
        flags = parse_args(argv[1:])
        env = systemd.environment(hostfs, unit)
        for var, flag in (("CONTAINER_CONFIG", "config"), ("CONTAINER_CONFIG_DIR", "config-dir")):
            if var in env and flag not in flags:
                flags[flag] = [env[var]]
        if {"config", "config-dir"} & flags.keys():
            return Location(load_flags(hostfs, flags, f"in ExecStart of {unit.where['ExecStart']}"),
                            _last(flags, "config", CONFIG_PATH), _last(flags, "config-dir", DROPIN_DIR),
                            f"ExecStart of {unit.where['ExecStart']}")
    return Location(load(hostfs), CONFIG_PATH, DROPIN_DIR, "CRI-O's default paths")


def _last(flags: dict[str, list[str]], name: str, default: str) -> str:
    return flags[name][-1] if name in flags else default


def load_flags(hostfs: HostFS, flags: dict[str, list[str]], origin: str) -> CrioConfig:
    return load(hostfs, _last(flags, "config", CONFIG_PATH), _last(flags, "config-dir", DROPIN_DIR), flags, origin)


def api_socket(cfg: CrioConfig) -> str:
    """The host path of CRI-O's socket: [crio.api] listen, or the default."""
    listen, _ = cfg.get("crio.api", "listen")
    return listen if isinstance(listen, str) and listen.startswith("/") else DEFAULT_SOCKET


def _unix_connection(client, path: str, timeout: float):
    """An HTTP connection (`client`: the http.client module) over a unix socket."""
    class UnixHTTPConnection(client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                raise
            self.sock = sock

    return UnixHTTPConnection("localhost", timeout=timeout)


def running_config(hostfs: HostFS, socket_path: str, timeout: float = 2.0) -> tuple[dict | None, str]:
    """(the config the running CRI-O uses, "") from GET /config on its
    socket (TOML, the same text `crio status config` prints), or (None, why
    not). The socket is resolved inside the host root (/var/run -> /run)."""
    # http.client (and the email parser it brings, 0.7 MB resident) only when the doctor
    # asks the running CRI-O: `serve` loads this module for the runtime's processes.
    import http.client

    try:
        conn = _unix_connection(http.client, hostfs.resolve(socket_path), timeout)
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
