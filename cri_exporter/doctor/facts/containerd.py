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
  top-level scalars and lists are overridden/appended.
"""
from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from dataclasses import dataclass, field

from cri_exporter.doctor.facts.files import MAX_CONFIG_BYTES, FileTooLarge, list_dir, read_config
from cri_exporter.hostfs import HostFS

CONFIG_PATH = "/etc/containerd/config.toml"
CRI_V2 = "io.containerd.grpc.v1.cri"
CRI_RUNTIME_V3 = "io.containerd.cri.v1.runtime"
CRI_IMAGES_V3 = "io.containerd.cri.v1.images"

DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CNI_BIN_DIR = "/opt/cni/bin"
# The sandbox image each release uses when the config names none.
DEFAULT_SANDBOX_IMAGE = {1: "registry.k8s.io/pause:3.8", 2: "registry.k8s.io/pause:3.8", 3: "registry.k8s.io/pause:3.10"}

_LINE_RE = re.compile(r"at line (\d+), column (\d+)")


@dataclass(frozen=True)
class ConfigError:
    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.column}" if self.line else self.path
        return f"{where}: {self.message}"


def parse_toml(hostfs: HostFS, host_path: str,
               max_bytes: int = MAX_CONFIG_BYTES) -> tuple[dict | None, ConfigError | None]:
    """A TOML file's data, or the error with its line and column."""
    try:
        text = read_config(hostfs, host_path, max_bytes)
    except (OSError, FileTooLarge) as e:
        return None, ConfigError(host_path, str(e) if isinstance(e, FileTooLarge) else e.strerror or str(e))
    try:
        return tomllib.loads(text), None
    except tomllib.TOMLDecodeError as e:
        m = _LINE_RE.search(str(e))
        line, col = (int(m.group(1)), int(m.group(2))) if m else (None, None)
        return None, ConfigError(host_path, str(e), line, col)


@dataclass
class ContainerdConfig:
    path: str
    exists: bool
    data: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)
    declared_version: int | None = None

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
        return str(_get(self.runtime_section, "containerd", "default_runtime_name") or "runc")

    def runtime_options(self) -> dict:
        """The default runtime's `options` table (runc's SystemdCgroup lives here)."""
        opts = _get(self.runtime_section, "containerd", "runtimes", self.default_runtime_name, "options")
        return opts if isinstance(opts, dict) else {}

    def runtime_options_table(self) -> str:
        return f'plugins."{self.runtime_section_name}".containerd.runtimes.{self.default_runtime_name}.options'

    def sandbox_image(self) -> tuple[str, bool]:
        """(image, explicitly set)."""
        if self.version >= 3:
            value = _get(self.images_section, "pinned_images", "sandbox")
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
        return str(_get(self.runtime_section, "cni", "conf_dir") or DEFAULT_CNI_CONF_DIR)

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


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _merge(into: dict, new: dict) -> None:
    """containerd's mergeConfig: plugin tables are replaced whole, lists
    appended, other values overridden."""
    for key, value in new.items():
        if key == "plugins" and isinstance(value, dict):
            plugins = into.setdefault("plugins", {})
            for name, section in value.items():
                plugins[name] = section
        elif key == "imports":
            continue
        elif isinstance(value, list) and isinstance(into.get(key), list):
            into[key] = into[key] + value
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            merged = dict(into[key])
            merged.update(value)
            into[key] = merged
        else:
            into[key] = value


# A node's imports are a handful of drop-ins; past these the rest is reported,
# not read (a glob over a huge directory, or imports that fan out).
MAX_IMPORTED_FILES = 64
MAX_IMPORTED_BYTES = 8 * MAX_CONFIG_BYTES


def _expand_import(hostfs: HostFS, pattern: str, base_dir: str) -> list[str]:
    """containerd's resolveImports (1.6 through 2.1): filepath.Clean, joined to
    the importing file's directory when relative (Join cleans too, so
    `./config.toml` is the file itself), and globbed only when it holds a `*`."""
    pattern = os.path.normpath(pattern)
    if not os.path.isabs(pattern):
        pattern = os.path.normpath(os.path.join(base_dir, pattern))
    if "*" not in pattern:
        return [pattern]
    directory, name_glob = os.path.split(pattern)
    return [os.path.join(directory, n) for n in list_dir(hostfs, directory) if fnmatch.fnmatchcase(n, name_glob)]


def load(hostfs: HostFS, path: str = CONFIG_PATH) -> ContainerdConfig:
    cfg = ContainerdConfig(path=path, exists=hostfs.exists(path))
    if not cfg.exists:
        return cfg
    data, err = parse_toml(hostfs, path)
    cfg.files.append(path)
    if err:
        cfg.errors.append(err)
        return cfg
    cfg.data = dict(data)
    v = data.get("version")
    cfg.declared_version = v if isinstance(v, int) else None
    seen = {os.path.normpath(path)}
    queue = [(p, os.path.dirname(path)) for p in _imports(data)]
    budget = MAX_IMPORTED_BYTES
    while queue:
        pattern, base = queue.pop(0)
        for imp in _expand_import(hostfs, pattern, base):
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
            _merge(cfg.data, sub)
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
