"""The kubelet's effective settings, assembled the way the kubelet does
(cmd/kubelet/app/server.go, kubelet 1.30-1.36):

1. Its command line: kubelet.service with its drop-ins (systemd's search
   path, `ExecStart=` reset), variables expanded from the Environment= lines
   and only the EnvironmentFile= files the unit names, word-split as systemd
   does (facts/systemd.py). That is kubeadm's 10-kubeadm.conf with
   kubeadm-flags.env and /etc/default/kubelet (Debian) or
   /etc/sysconfig/kubelet (RPM), and kubespray's /etc/kubernetes/kubelet.env.
   With no unit, a running kubelet's own argv (RKE2 starts it as a child).
2. The `--config` file (none without the flag: then defaults and flags).
   loadConfigFile fills evictionHard with the defaults when the file does
   not set it, or merges the defaults in when mergeDefaultEvictionSettings
   is true (1.33+, kubernetes PR 127577); a partial map otherwise leaves the
   other signals at 0.
3. The `--config-dir` drop-ins (KEP-3983; beta and on by default from
   1.30): every `*.conf` under it, walked recursively in lexical order
   (filepath.WalkDir), each applied to the config so far as a JSON merge
   patch (RFC 7386: maps merge, lists and scalars replace).
4. Flags given on the command line win over both.

k3s runs the kubelet inside its own process: the releases that write
agent/etc/kubelet.conf.d/00-k3s-defaults.conf pass it that drop-in directory
and a few arguments, read as facts/k3s.py describes; older k3s built every
setting in memory, and there the kubelet checks skip.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import yaml

from cri_exporter.doctor.facts import buildinfo, k3s, procfs, systemd
from cri_exporter.doctor.facts.files import FileTooLarge, list_dir, read_config
from cri_exporter.doctor.facts.packages import Version
from cri_exporter.hostfs import HostFS

DEFAULT_CONFIG = "/var/lib/kubelet/config.yaml"  # where kubeadm writes it

# KubeletConfiguration defaults (v1beta1) for fields the doctor reads.
DEFAULT_CGROUP_DRIVER = "cgroupfs"
# Since kubelet 1.27 an empty containerRuntimeEndpoint means containerd's socket.
DEFAULT_RUNTIME_ENDPOINT = "unix:///run/containerd/containerd.sock"
# Node-pressure eviction defaults (Linux, pkg/kubelet/eviction/defaults_linux.go;
# imagefs.inodesFree since 1.30: kubernetes PR 121834, listed in CHANGELOG-1.30
# under v1.30.0-alpha.1; its cherry-picks to 1.27/1.28 (PRs 122667, 122666) were closed).
DEFAULT_EVICTION_HARD = {
    "memory.available": "100Mi",
    "nodefs.available": "10%",
    "nodefs.inodesFree": "5%",
    "imagefs.available": "15%",
    "imagefs.inodesFree": "5%",
}

# Default signals younger than the others: the kubelet release that brought each.
DEFAULT_EVICTION_SINCE = {"imagefs.inodesFree": (1, 30)}

# Flag name -> config field it maps to.
FLAG_FIELDS = {
    "cgroup-driver": "cgroupDriver",
    "container-runtime-endpoint": "containerRuntimeEndpoint",
    "fail-swap-on": "failSwapOn",
    "eviction-hard": "evictionHard",
    "fail-cgroupv1": "failCgroupV1",
    "pod-max-pids": "podPidsLimit",
    "healthz-port": "healthzPort",
    "healthz-bind-address": "healthzBindAddress",
    "tls-cert-file": "tlsCertFile",
    "feature-gates": "featureGates",
    "rotate-certificates": "rotateCertificates",
}
# The kubelet's boolean flags take no separate value word (pflag NoOptDefVal).
BOOL_FLAGS = frozenset(("fail-swap-on", "fail-cgroupv1", "rotate-certificates", "rotate-server-certificates",
                        "register-node", "logtostderr", "alsologtostderr", "one-output", "skip-headers",
                        "skip-log-headers", "add-dir-header", "version", "help"))
# Layouts whose kubelet runs inside another program: its flags are in no file.
EMBEDDED = {"k3s": "/var/lib/rancher/k3s"}
MAX_DROPINS = 64


@dataclass
class KubeletSettings:
    config_path: str = DEFAULT_CONFIG
    config: dict = field(default_factory=dict)  # config file merged with the drop-ins
    config_exists: bool = False
    config_error: str = ""
    flags: dict[str, str] = field(default_factory=dict)
    flag_sources: dict[str, str] = field(default_factory=dict)  # flag -> file it came from
    files: list[str] = field(default_factory=list)
    config_sources: dict[str, str] = field(default_factory=dict)  # top-level field -> file that set it last
    dropin_dir: str = ""
    dropins: list[str] = field(default_factory=list)
    dropin_errors: list[str] = field(default_factory=list)
    eviction: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_EVICTION_HARD))
    eviction_where: str = "kubelet default"
    eviction_explicit: set[str] = field(default_factory=set)  # signals a config file or drop-in sets
    command_from: str = ""  # where the command line was read
    installed: str = ""  # what says a kubelet is installed here (unit, process, package, binary), or ""
    embedded_in: str = ""  # "k3s" when the kubelet runs inside it
    version: Version | None = None
    version_unknown: str = ""  # why the binary's build info did not tell the version either

    @property
    def version_text(self) -> str:
        """The kubelet's version as the findings say it, or why it is unknown."""
        if self.version is not None:
            return f"kubelet {self.version}"
        binary = f"; {self.version_unknown}" if self.version_unknown else ""
        if self.installed.startswith("k3s") or self.embedded_in:
            return f"kubelet version unknown (compiled into k3s; no package records it{binary})"
        return f"kubelet version unknown (no dpkg/rpm record of a kubelet package{binary})"

    @property
    def present(self) -> bool:
        return not self.embedded_in and (self.config_exists or bool(self.flags))

    def value(self, config_field: str, default=None):
        """(value, where): the flag wins over the config file and its drop-ins, then the default."""
        for flag, f in FLAG_FIELDS.items():
            if f == config_field and flag in self.flags:
                return self.flags[flag], f"--{flag} in {self.flag_sources[flag]}"
        if config_field in self.config:
            return self.config[config_field], f"{config_field} in {self.config_sources.get(config_field, self.config_path)}"
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

    def feature_gate(self, name: str) -> tuple[bool | None, str]:
        """An explicitly set feature gate (flag `A=true,B=false` or the config map), None when unset."""
        v, where = self.value("featureGates", None)
        if isinstance(v, str):
            gates = dict(part.split("=", 1) for part in v.split(",") if "=" in part)
            v = {k.strip(): g.strip() for k, g in gates.items()}
        if isinstance(v, dict) and name in v:
            return _truthy(v[name]), where
        return None, where

    def eviction_hard(self) -> tuple[dict[str, str], str]:
        """The hard eviction thresholds the kubelet runs with, and where they came from."""
        if "eviction-hard" in self.flags:
            return _parse_eviction_flag(self.flags["eviction-hard"]), f"--eviction-hard in {self.flag_sources['eviction-hard']}"
        return dict(self.eviction), self.eviction_where

    def default_threshold(self, signal: str) -> tuple[bool | None, str]:
        """Whether `signal`'s threshold in eviction_hard() exists in this kubelet
        when it comes from the kubelet's defaults, not a setting: True (set,
        or a default this version has), False (a default it predates), None
        (a default only newer kubelets have, and the version is unknown), with
        what was assumed."""
        since = DEFAULT_EVICTION_SINCE.get(signal)
        if since is None or "eviction-hard" in self.flags or signal in self.eviction_explicit:
            return True, ""
        first = f"{since[0]}.{since[1]}"
        if self.version is None:
            return None, (f"{self.version_text}: assumed the default {signal}<{self.eviction.get(signal)} of "
                          f"kubelet {first}+ (older kubelets have none), so at most a warning")
        if self.version.at_least(*since):
            return True, ""
        return False, f"kubelet {self.version.major}.{self.version.minor} has no default {signal} (a default from {first})"


def _parse_eviction_flag(v: str) -> dict[str, str]:
    out = {}
    for part in v.split(","):
        if "<" in part:
            k, _, q = part.partition("<")
            out[k.strip()] = q.strip()
    return out


def _truthy(v) -> bool:
    return v if isinstance(v, bool) else str(v).strip().lower() not in ("false", "0", "no")


def parse_flags(args: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    """pflag's reading of (word, origin) pairs: `--name=value`, `--name value`
    (not for boolean flags), a bare boolean flag meaning true; the last
    occurrence wins. -> (flags, flag -> origin)."""
    flags: dict[str, str] = {}
    sources: dict[str, str] = {}
    i = 0
    while i < len(args):
        a, origin = args[i]
        if a.startswith("--") and len(a) > 2:
            name, eq, value = a[2:].partition("=")
            if not eq and name not in BOOL_FLAGS and i + 1 < len(args) and not args[i + 1][0].startswith("-"):
                value = args[i + 1][0]
                i += 1
            elif not eq:
                value = "true"
            flags[name] = value
            sources[name] = origin
        i += 1
    return flags, sources


def _merge_patch(target, patch):
    """RFC 7386 JSON merge patch, as jsonpatch.MergePatch applies a drop-in."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge_patch(out.get(k), v)
    return out


def _load_yaml(hostfs: HostFS, path: str) -> tuple[dict | None, str]:
    try:
        data = yaml.safe_load(read_config(hostfs, path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return None, f"{path}: invalid YAML{where}: {getattr(e, 'problem', None) or e}"
    except (OSError, FileTooLarge) as e:
        return None, f"{path}: {e}"
    if data is None:
        return {}, ""
    if not isinstance(data, dict):
        return None, f"{path}: expected a KubeletConfiguration mapping, found {type(data).__name__}"
    return data, ""


def _walk_conf(hostfs: HostFS, directory: str) -> list[str]:
    """`*.conf` files under `directory` in filepath.WalkDir's order."""
    out: list[str] = []
    for name in list_dir(hostfs, directory):
        path = f"{directory.rstrip('/')}/{name}"
        if hostfs.is_dir(path) and not os.path.islink(hostfs.path(path)):
            out += _walk_conf(hostfs, path)
        elif os.path.splitext(name)[1] == ".conf" and hostfs.is_file(path):
            out.append(path)
    return out


def _command_line(hostfs: HostFS, unit: systemd.Unit,
                  processes: list[procfs.Process]) -> tuple[list[tuple[str, str]], str]:
    words = systemd.exec_start_sources(hostfs, unit) if unit.exists else None
    if words:
        named = [v.lstrip("-").strip() for v in unit.lists.get("EnvironmentFile", [])]
        return words[1:], f"ExecStart in {unit.where.get('ExecStart')}" + (
            f" with EnvironmentFile {', '.join(named)}" if named else "")
    proc = next((p for p in processes if p.comm == "kubelet" and p.args), None)
    if proc is not None:
        origin = f"the command line of kubelet pid {proc.pid}"
        return [(a, origin) for a in proc.args[1:]], origin
    return [], ""


BINARIES = ("/usr/bin/kubelet", "/usr/local/bin/kubelet")


def _installed(hostfs: HostFS, unit: systemd.Unit, processes: list[procfs.Process], version) -> str:
    """Evidence that a kubelet is installed on this host: a config file alone
    (a leftover, or a node being prepared) is none."""
    if any(p.comm == "kubelet" for p in processes):
        return "a kubelet process runs"
    if unit.exists:
        return f"{unit.where.get('ExecStart') or 'kubelet.service'}"
    if version is not None:
        return "the kubelet package"
    return next((b for b in BINARIES if hostfs.is_file(b)), "")


# RKE2 unpacks each release into <data-dir>/data/v<kubernetes version>-rke2r<n>-<hash>/bin and
# runs the kubelet from there (<data-dir>/bin links to the current one): the
# directory names the Kubernetes release its kubelet is.
_RKE2_RELEASE = re.compile(r"^(?P<dir>/.*/data/v(?P<v>\d+\.\d+\.\d+)-rke2r\d+[^/]*)/bin(?:/kubelet)?/?$")
RKE2_BIN = "/var/lib/rancher/rke2/bin"


def release_version(hostfs: HostFS, processes: list[procfs.Process]) -> Version | None:
    """The kubelet's version from the RKE2 release directory it runs from:
    the running kubelet's executable (/proc/<pid>/exe, readable with ptrace
    rights), else the release RKE2's bin link names (the one a restart runs)."""
    def readlink(host_path: str) -> str | None:
        try:  # the link itself, its directory resolved inside the root
            return os.readlink(os.path.join(hostfs.path(os.path.dirname(host_path)), os.path.basename(host_path)))
        except OSError:
            return None

    kubelets = [p for p in processes if p.comm == "kubelet"]
    candidates: list[tuple[str | None, str]] = [(exe, f"the running kubelet (pid {p.pid})") for p in kubelets
                  if (exe := readlink(f"/proc/{p.pid}/exe"))]
    if not candidates and any("/var/lib/rancher/rke2/" in a for p in kubelets for a in p.args):
        # Its executable is not readable, but its arguments are RKE2's: the release RKE2 runs.
        candidates.append((readlink(RKE2_BIN), f"{RKE2_BIN}, the release RKE2 runs"))
    for target, what in candidates:
        if not target:
            continue
        if not os.path.isabs(target):
            target = os.path.normpath(os.path.join(os.path.dirname(RKE2_BIN), target))
        m = _RKE2_RELEASE.match(target)
        if m:
            major, minor, patch = (int(x) for x in m.group("v").split("."))
            return Version(major, minor, patch, f"v{m.group('v')}", f"RKE2 release directory of {what}: {m.group('dir')}")
    return None


K3S_BINARY = "/usr/local/bin/k3s"


def _binaries(hostfs: HostFS, unit: systemd.Unit, processes: list[procfs.Process], embedded: bool) -> list[str]:
    """Where the kubelet's code is on this host, most telling first: k3s's
    binary on a k3s node, else the unit's ExecStart, the running kubelet's
    executable (a host path for a kubelet on the node), the usual paths."""
    if embedded:
        k3s_unit = next((u for u in (systemd.read_unit(hostfs, n) for n in k3s.UNITS) if u.exists), None)
        argv = (systemd.exec_start(hostfs, k3s_unit) or []) if k3s_unit else []
        return [p for p in (argv[:1] + [K3S_BINARY]) if os.path.isabs(p)]
    argv = (systemd.exec_start(hostfs, unit) or []) if unit.exists else []
    found = [argv[0]] if argv and os.path.isabs(argv[0]) else []
    for p in processes:
        if p.comm == "kubelet":
            try:
                found.append(hostfs.readlink(f"/proc/{p.pid}/exe"))
            except OSError:
                pass
    return list(dict.fromkeys(found + list(BINARIES)))


def binary_version(hostfs: HostFS, unit: systemd.Unit, processes: list[procfs.Process],
                   embedded: bool) -> tuple[Version | None, str]:
    """The kubelet's version from the build info of the first of its binaries present."""
    for path in _binaries(hostfs, unit, processes, embedded):
        if hostfs.is_file(path):
            return buildinfo.kubernetes_version(hostfs, path)
    return None, ""


def load(hostfs: HostFS, unit: systemd.Unit | None = None, processes: list[procfs.Process] | None = None,
         version: Version | None = None) -> KubeletSettings:
    unit = unit if unit is not None else systemd.read_unit(hostfs, "kubelet.service")
    version = version or release_version(hostfs, processes or [])
    s = KubeletSettings(version=version)
    args, s.command_from = _command_line(hostfs, unit, processes or [])
    s.files = list(unit.files) + [v.lstrip("-").strip() for v in unit.lists.get("EnvironmentFile", [])
                                  if hostfs.exists(v.lstrip("-").strip())]
    embedded = None if s.command_from else k3s.kubelet_command_line(hostfs)
    if embedded:
        args, s.command_from, files = embedded
        s.files += files
    s.flags, s.flag_sources = parse_flags(args)
    if s.version is None:
        # Without a command line of its own, a kubelet on a k3s node is k3s's.
        in_k3s = bool(embedded) or (not s.command_from and any(hostfs.is_dir(f"{d}/agent") for d in EMBEDDED.values()))
        s.version, s.version_unknown = binary_version(hostfs, unit, processes or [], in_k3s)
        version = s.version
    s.installed = "k3s runs it in its own process" if embedded else _installed(hostfs, unit, processes or [], version)
    if not s.command_from:
        for name, data_dir in EMBEDDED.items():
            if hostfs.is_dir(f"{data_dir}/agent"):
                s.embedded_in = name
                s.command_from = f"{name} runs the kubelet in its own process ({data_dir})"
                return s
    # Without any command line, kubeadm's path is the best guess; with one, --config decides.
    s.config_path = s.flags.get("config", "" if s.command_from else DEFAULT_CONFIG)
    if s.config_path and not os.path.isabs(s.config_path):
        s.config_path = os.path.join("/", s.config_path)  # systemd starts services in /
    s.config_exists = bool(s.config_path) and hostfs.exists(s.config_path)
    config: dict = {}
    if s.config_exists:
        s.files.append(s.config_path)
        data, s.config_error = _load_yaml(hostfs, s.config_path)
        if data is not None:
            config = data
            s.config_sources = {k: s.config_path for k in data}
    if not s.config_error:
        eviction = config.get("evictionHard")
        if not isinstance(eviction, dict):
            s.eviction, s.eviction_where = dict(DEFAULT_EVICTION_HARD), "kubelet default"
        elif config.get("mergeDefaultEvictionSettings") is True:
            s.eviction_explicit = {str(k) for k in eviction}
            s.eviction = {**DEFAULT_EVICTION_HARD, **{str(k): str(v) for k, v in eviction.items()}}
            s.eviction_where = f"evictionHard in {s.config_path}, merged with the defaults (mergeDefaultEvictionSettings)"
        else:
            s.eviction_explicit = {str(k) for k in eviction}
            s.eviction = {str(k): str(v) for k, v in eviction.items()}
            s.eviction_where = f"evictionHard in {s.config_path}"
        s.dropin_dir = s.flags.get("config-dir", "")
        for path in _walk_conf(hostfs, s.dropin_dir)[:MAX_DROPINS] if s.dropin_dir else []:
            s.dropins.append(path)
            s.files.append(path)
            data, error = _load_yaml(hostfs, path)
            if error or data is None:
                s.dropin_errors.append(error)
                continue
            patch = {k: v for k, v in data.items() if k not in ("apiVersion", "kind")}
            config = _merge_patch(config, patch)
            s.config_sources.update({k: path for k in patch})
            if isinstance(patch.get("evictionHard"), dict):
                # Merged into the map so far, defaults included: a partial map
                # in a drop-in leaves the other signals as they were.
                s.eviction = {str(k): str(v) for k, v in _merge_patch(s.eviction, patch["evictionHard"]).items()}
                s.eviction_explicit |= {str(k) for k, v in patch["evictionHard"].items() if v is not None}
                s.eviction_where += f", then {path}"
        s.config = config
    return s


# KubeletCgroupDriverFromCRI: alpha 1.28, beta and on by default 1.31, GA 1.34
# (KEP-4033). With it the kubelet asks the runtime's RuntimeConfig and uses
# that driver over its own cgroupDriver; a runtime answering Unimplemented
# (containerd 1.6/1.7) leaves it on its own setting.
DRIVER_FROM_CRI_DEFAULT_ON = (1, 31)


@dataclass(frozen=True)
class DriverInUse:
    driver: str
    where: str
    certain: bool  # False when the kubelet's version leaves it open which one it uses


def cgroup_driver_in_use(s: KubeletSettings, runtime_answer: str | None) -> DriverInUse:
    """The cgroup driver the kubelet runs with, given the runtime's RuntimeConfig
    answer ("systemd"/"cgroupfs", None when the runtime does not implement it)."""
    own, where = s.cgroup_driver()
    if runtime_answer is None:
        return DriverInUse(own, where + "; the runtime does not answer RuntimeConfig", True)
    gate, gate_where = s.feature_gate("KubeletCgroupDriverFromCRI")
    if gate is False and not (s.version and s.version.at_least(1, 34)):
        return DriverInUse(own, f"{where}; KubeletCgroupDriverFromCRI=false ({gate_where})", True)
    from_cri = f"the runtime's RuntimeConfig answer ({runtime_answer}), which the kubelet uses over its cgroupDriver"
    if gate is True or (s.version and s.version.at_least(*DRIVER_FROM_CRI_DEFAULT_ON)):
        return DriverInUse(runtime_answer, f"{from_cri} (KubeletCgroupDriverFromCRI, kubelet {s.version or 'gate set'})", True)
    if s.version is not None:
        return DriverInUse(own, f"{where}; kubelet {s.version} predates KubeletCgroupDriverFromCRI's default", True)
    return DriverInUse(own, f"{where}, unless the kubelet is 1.31+ (version unknown): then {from_cri}", False)
