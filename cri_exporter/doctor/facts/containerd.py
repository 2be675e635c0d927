"""containerd's config.toml read the way containerd reads it.

Facts (containerd 1.6/1.7 and 2.0 sources, docs/cri/config.md):
- No `version` line means version 1: plugins are keyed by short id
  (`[plugins.cri]`) and the long `io.containerd.grpc.v1.cri` tables are
  ignored. containerd 2.x deprecates version 1.
- Version 2 (1.3+): the CRI plugin is `plugins."io.containerd.grpc.v1.cri"`.
- Version 3 (2.0+): CRI is split into `io.containerd.cri.v1.runtime`
  (runtimes, cni, restrict_oom_score_adj) and `io.containerd.cri.v1.images`
  (registry, pinned_images.sandbox); keys left in the v2 table are silently
  ignored. containerd 1.x refuses version 3 outright.
- `imports` (globs, relative to the main file's directory) are read after
  the main file; an imported file's `[plugins."x"]` table REPLACES the
  main file's whole table for that plugin (mergeConfig: "Replace entire
  sections instead of merging map's values", containerd issue 5837), while
  top-level scalars and lists are overridden/appended. containerd 2.0+
  merges plugin tables key by key instead (tables deep-merged, a list
  inside a plugin replaced, top-level lists appended without duplicates);
  both seen with `containerd config dump` on 1.6.20, 1.7.24 and 2.1.9.
- A relative `imports` entry is taken against the importing file's
  directory, except a glob (only `*` makes one) before 1.6.29 / 1.7.16:
  filepath.Glob then matched it against containerd's working directory
  (seen on 1.6.20, started from / it imported nothing).
- Which file: `--config`/`-c` on containerd's command line, default
  /etc/containerd/config.toml, a relative path taken against containerd's
  working directory (cmd/containerd/command/main.go, 1.6 to 2.x: Go flag
  parsing, `-c x`, `-c=x`, `--config x`; flags stop at the first non-flag).
  `--address`/`-a` overrides [grpc] address.
"""
from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field

from cri_exporter.doctor.facts import layouts, procfs, systemd
from cri_exporter.doctor.facts.files import MAX_CONFIG_BYTES, FileTooLarge, list_dir, read_config
from cri_exporter.doctor.facts.toml import ConfigError, parse_toml, parse_toml_text
from cri_exporter.hostfs import HostFS

CONFIG_PATH = layouts.DEFAULT_CONFIG
CRI_V2 = "io.containerd.grpc.v1.cri"
CRI_RUNTIME_V3 = "io.containerd.cri.v1.runtime"
CRI_IMAGES_V3 = "io.containerd.cri.v1.images"

# Top-level keys of the version 3 CRI tables: the union over containerd 2.0,
# 2.1, 2.2 and 2.3 (internal/cri/config/config.go: RuntimeConfig, ImageConfig),
# so a key one of them knows is never called unknown. Others are dropped with
# "Ignoring unknown key in TOML for plugin" (cmd/containerd/server/config).
CRI_V3_KEYS = {
    CRI_RUNTIME_V3: frozenset((
        "cdi_spec_dirs", "cni", "containerd", "device_ownership_from_security_context", "disable_apparmor",
        "disable_hugetlb_controller", "disable_proc_mount", "drain_exec_sync_io_timeout", "enable_cdi",
        "enable_selinux", "enable_unprivileged_icmp", "enable_unprivileged_ports", "ignore_deprecation_warnings",
        "ignore_image_defined_volumes", "max_container_log_line_size", "netns_mounts_under_state_dir",
        "restrict_oom_score_adj", "selinux_category_range", "stats_collect_period", "stats_retention_period",
        "tolerate_missing_hugetlb_controller", "unset_seccomp_profile")),
    CRI_IMAGES_V3: frozenset((
        "concurrent_layer_fetch_buffer", "disable_snapshot_annotations", "discard_unpacked_layers", "image_decryption",
        "image_pull_progress_timeout", "image_pull_with_sync_fs", "max_concurrent_downloads", "pinned_images",
        "registry", "runtime_platforms", "snapshotter", "stats_collect_period", "use_local_image_pull")),
}
# Version 2 keys with no place of that name in version 3 (1.7 PluginConfig).
V2_ONLY_KEYS = {
    "sandbox_image": f'[plugins."{CRI_IMAGES_V3}".pinned_images] sandbox',
    "systemd_cgroup": f'SystemdCgroup = true in [plugins."{CRI_RUNTIME_V3}".containerd.runtimes.runc.options]',
    "disable_cgroup": "nothing: removed in containerd 2.0",
}

DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CNI_BIN_DIR = "/opt/cni/bin"
# The sandbox image each release uses when the config names none.
DEFAULT_SANDBOX_IMAGE = {1: "registry.k8s.io/pause:3.8", 2: "registry.k8s.io/pause:3.8", 3: "registry.k8s.io/pause:3.10"}

@dataclass
class ContainerdConfig:
    path: str
    exists: bool
    data: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)
    declared_version: int | None = None
    text: str = ""  # the main file's text (its header says whether it is generated)

    @property
    def version(self) -> int:
        return self.declared_version if self.declared_version is not None else 1

    @property
    def plugins(self) -> dict:
        p = self.data.get("plugins")
        return p if isinstance(p, dict) else {}

    def _plugin(self, name: str) -> dict:
        p = self.plugins.get(name)
        return p if isinstance(p, dict) else {}

    @property
    def runtime_section_name(self) -> str:
        return {1: "cri", 2: CRI_V2}.get(self.version, CRI_RUNTIME_V3)

    @property
    def images_section_name(self) -> str:
        return {1: "cri", 2: CRI_V2}.get(self.version, CRI_IMAGES_V3)

    @property
    def runtime_section(self) -> dict:
        return self._plugin(self.runtime_section_name)

    @property
    def images_section(self) -> dict:
        return self._plugin(self.images_section_name)

    @property
    def disabled_plugins(self) -> list[str]:
        d = self.data.get("disabled_plugins", [])
        return [str(x) for x in d] if isinstance(d, list) else []

    @property
    def default_runtime_name(self) -> str:
        return str(dig(self.runtime_section, "containerd", "default_runtime_name") or "runc")

    def runtime_options(self) -> dict:
        """The default runtime's `options` table (runc's SystemdCgroup lives here)."""
        opts = dig(self.runtime_section, "containerd", "runtimes", self.default_runtime_name, "options")
        return opts if isinstance(opts, dict) else {}

    def runtime_options_table(self) -> str:
        return f'plugins."{self.runtime_section_name}".containerd.runtimes.{self.default_runtime_name}.options'

    def sandbox_image(self) -> tuple[str, bool]:
        """(image, explicitly set)."""
        if self.version >= 3:
            value = dig(self.images_section, "pinned_images", "sandbox")
        else:
            value = self.runtime_section.get("sandbox_image")
        if isinstance(value, str) and value:
            return value, True
        return DEFAULT_SANDBOX_IMAGE.get(self.version, DEFAULT_SANDBOX_IMAGE[3]), False

    def sandbox_image_key(self) -> str:
        if self.version >= 3:
            return f'[plugins."{CRI_IMAGES_V3}".pinned_images] sandbox'
        return f'[plugins."{self.runtime_section_name}"] sandbox_image'

    def cni_conf_dir(self) -> str:
        return str(dig(self.runtime_section, "cni", "conf_dir") or DEFAULT_CNI_CONF_DIR)

    def cni_bin_dirs(self) -> list[str]:
        cni = self.runtime_section.get("cni") or {}
        dirs = cni.get("bin_dirs") if isinstance(cni, dict) else None  # containerd 2.1+
        if isinstance(dirs, list) and dirs:
            return [str(d) for d in dirs]
        return [str(cni.get("bin_dir") or DEFAULT_CNI_BIN_DIR) if isinstance(cni, dict) else DEFAULT_CNI_BIN_DIR]

    def registry(self) -> dict:
        r = self.images_section.get("registry")
        return r if isinstance(r, dict) else {}

    def registry_table(self) -> str:
        return f'plugins."{self.images_section_name}".registry'


def registry_roots(config_path: str) -> list[str]:
    """registry.config_path is a list of directories (filepath.SplitList: ":"
    on Linux), searched in order for each registry's directory (1.7, 2.x
    image_pull.go registryHosts / hostDirFromRoots)."""
    return [p for p in config_path.split(":") if p]


def dig(d, *keys):
    """d[k1][k2]... or None where a level is missing or not a table."""
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _merge(into: dict, new: dict, deep_plugins: bool) -> None:
    """containerd's mergeConfig for one imported file (see the module doc)."""
    for key, value in new.items():
        if key == "imports":
            continue
        if key == "plugins" and isinstance(value, dict):
            plugins = into.setdefault("plugins", {})
            for name, section in value.items():
                if deep_plugins and isinstance(section, dict) and isinstance(plugins.get(name), dict):
                    plugins[name] = _deep_merge(plugins[name], section)
                else:
                    plugins[name] = section
        elif isinstance(value, list) and isinstance(into.get(key), list):
            into[key] = into[key] + ([v for v in value if v not in into[key]] if deep_plugins else value)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key] = {**into[key], **value}
        else:
            into[key] = value


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# A node's imports are a handful of drop-ins; past these the rest is reported,
# not read (a glob over a huge directory, or imports that fan out).
MAX_IMPORTED_FILES = 64
MAX_IMPORTED_BYTES = 8 * MAX_CONFIG_BYTES


def _expand_import(hostfs: HostFS, pattern: str, base_dir: str, glob_dir: str) -> list[str]:
    """containerd's resolveImports: a relative plain path is joined to the
    importing file's directory, a relative glob to `glob_dir` (the same
    directory, or the working directory on the releases that had it so)."""
    if "*" not in pattern:
        return [os.path.normpath(pattern if os.path.isabs(pattern) else os.path.join(base_dir, pattern))]
    if not os.path.isabs(pattern):
        pattern = os.path.join(glob_dir, pattern)
    directory, name_glob = os.path.split(os.path.normpath(pattern))
    return [os.path.join(directory, n) for n in list_dir(hostfs, directory) if fnmatch.fnmatchcase(n, name_glob)]


def _version_tuple(version: str | None) -> tuple[int, int, int] | None:
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def globs_from_cwd(version: str | None) -> bool:
    """Releases that matched a relative import glob against the working directory."""
    v = _version_tuple(version)
    return v is not None and ((v[:2] == (1, 6) and v[2] < 29) or (v[:2] == (1, 7) and v[2] < 16) or v[:2] < (1, 6))


def load(hostfs: HostFS, path: str = CONFIG_PATH, version: str | None = None, cwd: str = "/") -> ContainerdConfig:
    """The config containerd `version` (its CRI Version answer, e.g. "v2.1.9";
    None when unknown) builds from `path`; `cwd` is its working directory."""
    cfg = ContainerdConfig(path=path, exists=hostfs.exists(path))
    if not cfg.exists:
        return cfg
    try:
        cfg.text = read_config(hostfs, path)
    except (OSError, FileTooLarge) as e:
        cfg.files.append(path)
        cfg.errors.append(ConfigError(path, str(e) if isinstance(e, FileTooLarge) else e.strerror or str(e)))
        return cfg
    data, err = parse_toml_text(path, cfg.text)
    cfg.files.append(path)
    if err:
        cfg.errors.append(err)
        return cfg
    cfg.data = dict(data)
    v = data.get("version")
    cfg.declared_version = v if isinstance(v, int) else None
    known = _version_tuple(version)
    deep = known[0] >= 2 if known else cfg.version >= 3
    glob_dir = cwd if globs_from_cwd(version) else None
    # Paths cleaned as containerd's filepath.Join cleans them: `./config.toml` is the file itself.
    seen = {os.path.normpath(path)}
    queue = [(p, os.path.dirname(path)) for p in _imports(data)]
    budget = MAX_IMPORTED_BYTES
    while queue:
        pattern, base = queue.pop(0)
        for imp in _expand_import(hostfs, pattern, base, glob_dir or base):
            if imp in seen:
                continue
            if len(seen) > MAX_IMPORTED_FILES or budget <= 0:
                cfg.errors.append(ConfigError(imp, f"not read: more than {MAX_IMPORTED_FILES} imported files or "
                                                   f"{MAX_IMPORTED_BYTES} bytes of them (an import loop or a glob "
                                                   "over a large directory?)"))
                return cfg
            seen.add(imp)
            cfg.files.append(imp)
            sub, err = parse_toml(hostfs, imp, max_bytes=min(MAX_CONFIG_BYTES, budget))
            budget -= _size(hostfs, imp)
            if err:
                cfg.errors.append(err)
                continue
            _merge(cfg.data, sub, deep)
            queue.extend((p, os.path.dirname(imp)) for p in _imports(sub))
    return cfg


def _imports(data: dict) -> list[str]:
    imports = data.get("imports", [])
    return [p for p in imports if isinstance(p, str)] if isinstance(imports, list) else []


def _size(hostfs: HostFS, host_path: str) -> int:
    try:
        return os.stat(hostfs.path(host_path)).st_size
    except OSError:
        return 0


# ---- which file, and which process ----

DEFAULT_ADDRESS = layouts.DEFAULT_SOCKET
_FLAGS = {"config": "config", "c": "config", "address": "address", "a": "address",
          "root": "root", "state": "state", "log-level": "log-level", "l": "log-level"}


def parse_args(argv: list[str] | tuple[str, ...]) -> dict[str, str]:
    """containerd's global string flags from its argv (without argv[0]), as
    Go's flag package reads them: one or two dashes, `-c x` or `-c=x`, the
    value of `-c x` taken even when it starts with a dash, parsing stopping
    at `--` or the first non-flag word (a subcommand); the last one wins."""
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            break
        name, eq, value = arg.lstrip("-").partition("=")
        if name in _FLAGS:
            if not eq:
                if i + 1 >= len(argv):
                    break
                i += 1
                value = argv[i]
            flags[_FLAGS[name]] = value
        i += 1
    return flags


@dataclass
class Location:
    """The config file the node's containerd reads, and how the doctor knows."""

    config: ContainerdConfig
    layout: layouts.Layout
    how: str  # "-c on the command line of containerd pid 812", "ExecStart in ...", ...
    process: procfs.Process | None = None
    address: str = DEFAULT_ADDRESS
    notes: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # containerd processes that serve other sockets
    restart: str = "systemctl restart containerd"  # what restarts this containerd (set by locate)

    @property
    def path(self) -> str:
        return self.config.path

    def template(self, hostfs: HostFS) -> str | None:
        """The existing file config.toml is regenerated from, if any."""
        return next((t for t in self.layout.templates if hostfs.exists(t)), None)

    def describe(self, hostfs: HostFS) -> str:
        text = f"{self.path}: {self.how}; layout {self.layout.name}"
        tmpl = self.template(hostfs)
        if tmpl:
            text += f", written from {tmpl} at every start"
        elif self.layout.generated:
            text += ", rewritten from the distribution's built-in template at every start"
        return "\n".join([text] + self.notes + self.others)


def _address(flags: dict[str, str], cfg: ContainerdConfig) -> str:
    grpc = cfg.data.get("grpc")
    configured = grpc.get("address") if isinstance(grpc, dict) else None
    return flags.get("address") or (configured if isinstance(configured, str) and configured else DEFAULT_ADDRESS)


def _config_path(hostfs: HostFS, proc: procfs.Process, flags: dict[str, str], notes: list[str]) -> tuple[str, str]:
    """(host path of the config, the process's working directory, "/" when unreadable)."""
    path = flags.get("config", CONFIG_PATH)
    cwd, why = procfs.cwd(hostfs, proc.pid)
    if not os.path.isabs(path):
        notes.append(f"relative -c {path} taken against containerd's working directory {cwd}" if cwd else
                     f"relative -c {path} taken against / (systemd's default working directory): {why}")
    cwd = cwd or "/"
    return os.path.normpath(os.path.join(cwd, path)), cwd


def same_socket(hostfs: HostFS, host_path: str, endpoint_local: str | None) -> bool:
    """Whether the socket a runtime listens on (a host path) is the one the
    doctor talks to (a local path: under the host root after probing, or as
    given by --runtime-endpoint). The same inode settles it (bind mounts,
    /var/run -> /run); the names are compared when nothing can be stat'ed."""
    if not endpoint_local:
        return False
    try:
        a, b = os.stat(hostfs.resolve(host_path)), os.stat(endpoint_local)
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
    except OSError:
        pass
    root = hostfs.root.rstrip("/")
    local = endpoint_local[len(root):] if root and endpoint_local.startswith(root + "/") else endpoint_local
    return _run_path(host_path) == _run_path(local)


def _run_path(path: str) -> str:
    path = os.path.normpath(path)
    return "/run" + path[len("/var/run"):] if path == "/var/run" or path.startswith("/var/run/") else path


def socket_as_seen_by(hostfs: HostFS, proc: procfs.Process, address: str, endpoint_local: str | None) -> bool | None:
    """Whether `address`, looked up in the process's own mount namespace and
    root (the kernel follows /proc/<pid>/root there), is the endpoint's
    socket; None when that cannot be read (no ptrace rights, a fixture tree).
    A containerd in another mount namespace (a kind node, a test's private
    one) may name the same path as the host's and listen elsewhere."""
    if not endpoint_local or not os.path.isabs(address):
        return None
    try:
        theirs = os.stat(hostfs.proc_root(proc.pid) + address)
        ours = os.stat(endpoint_local)
    except OSError:
        return None
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def owns_socket(hostfs: HostFS, proc: procfs.Process, address: str) -> bool:
    """Anyone can start a process called containerd that names the real
    socket and a config of its choosing (say /etc/shadow, which would then
    go into the bundle): the runtime's uid owns its socket."""
    try:
        owner = os.stat(hostfs.resolve(address)).st_uid
    except OSError:
        owner = 0  # no socket to go by (the runtime is down): only root's process
    return proc.uid is None or proc.uid == owner


ELSEWHERE, NOT_OWNER = "elsewhere", "not-owner"


def why_not_serving(hostfs: HostFS, proc: procfs.Process, address: str, endpoint_local: str | None) -> str | None:
    """None when `proc`, which says it listens on `address`, is the runtime
    behind the endpoint; else ELSEWHERE (its socket is another) or NOT_OWNER.
    Where its mount namespace cannot be looked into, a process in a nested
    pid namespace is taken to name a path of its own (a kind node's
    containerd names /run/containerd/containerd.sock too)."""
    seen = socket_as_seen_by(hostfs, proc, address, endpoint_local)
    if seen is None:
        seen = not proc.nested and same_socket(hostfs, address, endpoint_local)
    if not seen:
        return ELSEWHERE
    return None if owns_socket(hostfs, proc, address) else NOT_OWNER


def serves(hostfs: HostFS, proc: procfs.Process, address: str, endpoint_local: str | None) -> bool:
    """Whether `proc`, which says it listens on `address`, is the runtime behind the endpoint."""
    return why_not_serving(hostfs, proc, address, endpoint_local) is None


@dataclass
class Started:
    """How a containerd process was started: its flags, the config file it
    reads (with its imports), and the socket it listens on."""

    flags: dict[str, str]
    path: str
    cwd: str
    config: ContainerdConfig
    address: str
    notes: list[str]


def started_with(hostfs: HostFS, proc: procfs.Process, version: str | None = None) -> Started:
    notes: list[str] = []
    flags = parse_args(proc.args[1:])
    path, cwd = _config_path(hostfs, proc, flags, notes)
    cfg = load(hostfs, path, version, cwd)
    return Started(flags, path, cwd, cfg, _address(flags, cfg), notes)


def locate(hostfs: HostFS, processes: list[procfs.Process], endpoint_local: str | None,
           version: str | None = None) -> Location:
    """The containerd serving `endpoint_local` and the config it was started
    with: its command line first; with no such process, the layout the
    endpoint's socket belongs to, containerd.service's ExecStart, the default."""
    loc = _find(hostfs, processes, endpoint_local, version)
    loc.restart = _restart(hostfs, loc)
    return loc


def sole_runtime(processes: list[procfs.Process], comm: str, endpoint_local: str | None) -> procfs.Process | None:
    """With nothing listening on the endpoint (no socket: the doctor probed
    and found no runtime, or was pointed at a path that is gone), nothing
    says which process is the runtime; the only root one of that name is."""
    if endpoint_local and os.path.exists(endpoint_local):
        return None
    found = [p for p in processes if p.comm == comm and p.uid in (None, 0)]
    return found[0] if len(found) == 1 else None


def _find(hostfs: HostFS, processes: list[procfs.Process], endpoint_local: str | None,
          version: str | None) -> Location:
    others = []
    sole = sole_runtime(processes, "containerd", endpoint_local)
    for proc in (p for p in processes if p.comm == "containerd"):
        started = started_with(hostfs, proc, version)
        flags, path, cfg, address, notes = started.flags, started.path, started.config, started.address, started.notes
        why_not = None if proc is sole else why_not_serving(hostfs, proc, address, endpoint_local)
        if why_not == ELSEWHERE:
            nested = " (in a nested pid namespace)" if proc.nested else ""
            others.append(f"containerd pid {proc.pid}{nested} serves {address}, not this endpoint ({path})")
            continue
        if why_not == NOT_OWNER:
            others.append(f"containerd pid {proc.pid} (uid {proc.uid}) names {address} but does not own it: "
                          f"not the runtime ({path} ignored)")
            continue
        if proc is sole:
            notes.append(f"no socket at the endpoint: the only containerd process (it listens on {address})")
        if "config" in flags:
            how = f"-c {flags['config']} on the command line of containerd pid {proc.pid}"
        elif proc.args:
            how = f"containerd pid {proc.pid} was started without -c: the default path"
        else:
            how = f"containerd pid {proc.pid}'s command line is unreadable: the default path"
        return Location(cfg, layouts.recognise(path, cfg.text), how, proc, address, notes, others)
    for layout in _layouts_for(hostfs, endpoint_local):
        if layout is layouts.DEFAULT:
            break
        flags = parse_args(layouts.microk8s_args(hostfs) or []) if layout.name == "microk8s" else {}
        path = flags.get("config", layout.config)
        cfg = load(hostfs, path, version)
        if cfg.exists:
            how = f"--config in {layouts.MICROK8S_ARGS}" if "config" in flags else f"the {layout.name} layout's path"
            return Location(cfg, layouts.recognise(path, cfg.text), how + " (no containerd process serves the endpoint)",
                            None, layout.socket, [], others)
    unit = systemd.read_unit(hostfs, "containerd.service")
    argv = systemd.exec_start(hostfs, unit)
    if argv:
        flags = parse_args(argv[1:])
        if "config" in flags:
            cwd = unit.settings.get("WorkingDirectory", "/").lstrip("-") or "/"
            path = os.path.normpath(os.path.join(cwd, flags["config"]))
            cfg = load(hostfs, path, version, cwd)
            return Location(cfg, layouts.recognise(path, cfg.text), f"-c in ExecStart of {unit.where['ExecStart']}",
                            None, _address(flags, cfg), [], others)
    cfg = load(hostfs, CONFIG_PATH, version)
    return Location(cfg, layouts.DEFAULT, "containerd's default path", None, _address({}, cfg), [], others)


def _restart(hostfs: HostFS, loc: Location) -> str:
    if loc.layout.name not in ("default", "custom"):
        return layouts.restart_command(hostfs, loc.layout)
    unit = systemd.read_unit(hostfs, "containerd.service")
    unit_config = parse_args((systemd.exec_start(hostfs, unit) or [""])[1:]).get("config", CONFIG_PATH)
    if loc.process is None or (unit.exists and unit_config == loc.path):
        return "systemctl restart containerd"
    return f"# restart containerd the way this node started it (pid {loc.process.pid}: {' '.join(loc.process.args)})"


def _layouts_for(hostfs: HostFS, endpoint_local: str | None) -> list[layouts.Layout]:
    return [layout for socket, found in layouts.BY_SOCKET.items() if same_socket(hostfs, socket, endpoint_local)
            for layout in found]
