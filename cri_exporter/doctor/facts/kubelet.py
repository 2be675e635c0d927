"""The kubelet's settings: its config file plus its command-line flags.

The kubelet reads flags from its systemd unit and drop-ins, which on kubeadm
nodes expand KUBELET_KUBEADM_ARGS from /var/lib/kubelet/kubeadm-flags.env
and KUBELET_EXTRA_ARGS from /etc/default/kubelet (Debian) or
/etc/sysconfig/kubelet (RPM). A flag given on the command line wins over
the same field in the config file (kubelet 1.2x+).
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

import yaml

from cri_exporter.doctor.facts.files import FileTooLarge, list_dir, read_config
from cri_exporter.hostfs import HostFS

DEFAULT_CONFIG = "/var/lib/kubelet/config.yaml"
ENV_FILES = ("/var/lib/kubelet/kubeadm-flags.env", "/etc/default/kubelet", "/etc/sysconfig/kubelet")
UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system", "/etc/systemd/system")

# KubeletConfiguration defaults (v1beta1) for fields the doctor reads.
DEFAULT_CGROUP_DRIVER = "cgroupfs"
# Since kubelet 1.27 an empty containerRuntimeEndpoint means containerd's socket.
DEFAULT_RUNTIME_ENDPOINT = "unix:///run/containerd/containerd.sock"
# Node-pressure eviction defaults (Linux). They apply only when evictionHard is
# not set at all: setting any one signal zeroes the others (kubernetes.io docs,
# "Hard eviction thresholds").
DEFAULT_EVICTION_HARD = {
    "memory.available": "100Mi",
    "nodefs.available": "10%",
    "nodefs.inodesFree": "5%",
    "imagefs.available": "15%",
    "imagefs.inodesFree": "5%",
}

# Flag name -> config field it maps to.
FLAG_FIELDS = {
    "cgroup-driver": "cgroupDriver",
    "container-runtime-endpoint": "containerRuntimeEndpoint",
    "fail-swap-on": "failSwapOn",
    "eviction-hard": "evictionHard",
    "fail-cgroupv1": "failCgroupV1",
}

_ENV_RE = re.compile(r'^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$')


@dataclass
class KubeletSettings:
    config_path: str = DEFAULT_CONFIG
    config: dict = field(default_factory=dict)
    config_exists: bool = False
    config_error: str = ""
    flags: dict[str, str] = field(default_factory=dict)
    flag_sources: dict[str, str] = field(default_factory=dict)  # flag -> file it came from
    files: list[str] = field(default_factory=list)

    @property
    def present(self) -> bool:
        return self.config_exists or bool(self.flags)

    def value(self, config_field: str, default=None):
        """(value, where): the flag wins over the config file, then the default."""
        for flag, f in FLAG_FIELDS.items():
            if f == config_field and flag in self.flags:
                return self.flags[flag], f"--{flag} in {self.flag_sources[flag]}"
        if config_field in self.config:
            return self.config[config_field], f"{config_field} in {self.config_path}"
        return default, "kubelet default"

    def cgroup_driver(self) -> tuple[str, str]:
        v, where = self.value("cgroupDriver", DEFAULT_CGROUP_DRIVER)
        return str(v), where

    def runtime_endpoint(self) -> tuple[str, str]:
        v, where = self.value("containerRuntimeEndpoint", "")
        return (str(v) if v else DEFAULT_RUNTIME_ENDPOINT), where

    def fail_swap_on(self) -> tuple[bool, str]:
        v, where = self.value("failSwapOn", True)
        return _truthy(v), where

    def eviction_hard(self) -> tuple[dict[str, str], str]:
        v, where = self.value("evictionHard", None)
        if v is None:
            return dict(DEFAULT_EVICTION_HARD), "kubelet default"
        if isinstance(v, str):  # flag form: memory.available<100Mi,nodefs.available<10%
            out = {}
            for part in v.split(","):
                if "<" in part:
                    k, _, q = part.partition("<")
                    out[k.strip()] = q.strip()
            return out, where
        return ({str(k): str(q) for k, q in v.items()} if isinstance(v, dict) else {}), where


def _truthy(v) -> bool:
    return v if isinstance(v, bool) else str(v).strip().lower() not in ("false", "0", "no")


def parse_flags(args: list[str]) -> dict[str, str]:
    flags: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            name, eq, value = a[2:].partition("=")
            if not eq and i + 1 < len(args) and not args[i + 1].startswith("-"):
                # Boolean flags never take a separate value in the kubelet, but
                # the others may: `--config /var/lib/kubelet/config.yaml`.
                value = args[i + 1]
                i += 1
            elif not eq:
                value = "true"
            flags[name] = value
        i += 1
    return flags


def _env_file_args(text: str) -> list[str]:
    args: list[str] = []
    for line in text.splitlines():
        m = _ENV_RE.match(line)
        if m:
            try:
                args += shlex.split(shlex.split(m.group(2))[0] if m.group(2).strip() else "")
            except (ValueError, IndexError):
                continue
    return args


def _unit_args(text: str) -> list[str]:
    """Flags written literally in a unit's Environment= and ExecStart= lines."""
    args: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        key, eq, value = line.partition("=")
        if not eq or key not in ("Environment", "ExecStart"):
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            continue
        for w in words:
            if "=" in w and not w.startswith("-") and key == "Environment":
                w = w.split("=", 1)[1]
                try:
                    args += shlex.split(w)
                except ValueError:
                    pass
            else:
                args.append(w)
    return [a for a in args if a.startswith("--") or not a.startswith("$")]


def load(hostfs: HostFS) -> KubeletSettings:
    s = KubeletSettings()
    sources: list[tuple[str, list[str]]] = []
    for d in UNIT_DIRS:
        unit = f"{d}/kubelet.service"
        drop = f"{d}/kubelet.service.d"
        for p in ([unit] if hostfs.exists(unit) else []) + [f"{drop}/{n}" for n in list_dir(hostfs, drop) if n.endswith(".conf")]:
            try:
                sources.append((p, _unit_args(read_config(hostfs, p))))
            except (OSError, FileTooLarge):
                continue
    for p in ENV_FILES:
        if hostfs.exists(p):
            try:
                sources.append((p, _env_file_args(read_config(hostfs, p))))
            except (OSError, FileTooLarge):
                continue
    for path, args in sources:
        s.files.append(path)
        for name, value in parse_flags(args).items():
            s.flags[name] = value
            s.flag_sources[name] = path
    s.config_path = s.flags.get("config", DEFAULT_CONFIG)
    s.config_exists = hostfs.exists(s.config_path)
    if s.config_exists:
        s.files.append(s.config_path)
        try:
            data = yaml.safe_load(read_config(hostfs, s.config_path))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            s.config_error = f"{s.config_path}: invalid YAML{where}: {getattr(e, 'problem', None) or e}"
        except (OSError, FileTooLarge) as e:
            s.config_error = f"{s.config_path}: {e}"
        else:
            if isinstance(data, dict):
                s.config = data
            elif data is not None:
                s.config_error = f"{s.config_path}: expected a KubeletConfiguration mapping, found {type(data).__name__}"
    return s
