"""containerd's configuration, read as containerd reads it (facts/containerd.py)."""
from __future__ import annotations

import os
import re

from cri_exporter.cri.client import CriError
from cri_exporter.doctor.checks._common import toml_snippet
from cri_exporter.doctor.facts import containerd as cfacts
from cri_exporter.doctor.facts import layouts, procfs
from cri_exporter.doctor.facts.files import list_dir
from cri_exporter.doctor.facts.toml import parse_toml
from cri_exporter.doctor.model import Severity, failed, passed, skipped, warned
from cri_exporter.doctor.registry import check
from cri_exporter.doctor.requirements import CONTAINERD_CONFIG, CONTAINERD_CONFIG_PARSES, RUNS_CONTAINERD

REF_CONFIG = "https://github.com/containerd/containerd/blob/main/docs/cri/config.md"
REF_CGROUP_DRIVER = "https://kubernetes.io/docs/setup/production-environment/container-runtimes/#containerd-systemd"
REF_DRIVER_FROM_CRI = "https://kubernetes.io/docs/tasks/administer-cluster/kubeadm/configure-cgroup-driver/"
REF_CONFIG_V3 = "https://github.com/containerd/containerd/blob/v2.1.0/cmd/containerd/server/config/config.go"  # "Ignoring unknown key"
REF_HOSTS = "https://github.com/containerd/containerd/blob/main/docs/hosts.md"
REF_RELEASES = "https://github.com/containerd/containerd/blob/main/RELEASES.md#deprecated-config-properties"
REF_TROUBLESHOOT = "https://kubernetes.io/docs/setup/production-environment/tools/kubeadm/troubleshooting-kubeadm/"


def config_fix(ctx, snippet: str, dropin: bool = True) -> str:
    """Where to make a config change so that the running containerd gets it
    and it survives: the template of a generated config.toml (k3s, RKE2,
    microk8s rewrite it at every start), else the file containerd was
    started with; then the restart. `dropin=False` for a change an import
    cannot make (removing from a top-level list, which imports append to)."""
    loc, hostfs = ctx.containerd_location, ctx.hostfs
    restart = loc.restart
    template = loc.template(hostfs)
    if template:
        return (f"In {template} (the template {loc.path} is written from at every start: "
                f"edit the template, not the generated file):\n{snippet}\n{restart}")
    if loc.layout.generated:
        directory = _dropin_dir(loc) if dropin else None
        if directory and loc.config.version >= 3:  # 2.x merges an import into the tables, 1.x would replace them
            return (f"{loc.path} is rewritten at every start; put the change in a file it imports:\n"
                    f"mkdir -p {directory} && cat > {directory}/90-cri-exporter-doctor.toml <<'EOF'\n"
                    f"version = 3\n{snippet}\nEOF\n{restart}")
        named = layouts.generated_header(loc.config.text)
        template = (os.path.join(os.path.dirname(loc.path), named[1]) if named else
                    loc.layout.templates[0 if loc.config.version >= 3 else -1])
        return (f"{loc.path} is rewritten at every start; make the change in the template it is written from:\n"
                f"cp {loc.path} {template}   # then edit {template}:\n{snippet}\n{restart}")
    return f"In {loc.path}:\n{snippet}\n{restart}"


def _dropin_dir(loc: cfacts.Location) -> str | None:
    """A directory the config imports every *.toml of (k3s/RKE2's config-v3.toml.d)."""
    for pattern in loc.config.data.get("imports") or []:
        if isinstance(pattern, str) and os.path.basename(pattern) == "*.toml":
            d = os.path.dirname(pattern)
            return d if os.path.isabs(d) else os.path.join(os.path.dirname(loc.path), d)
    return None


@check("containerd.config.parse", Severity.CRITICAL, requires=(RUNS_CONTAINERD,))
def config_parse(ctx):
    """containerd refuses to start on a config (or import) that is not valid TOML."""
    cfg = ctx.containerd
    where = ctx.containerd_location.describe(ctx.hostfs)
    if not cfg.exists:
        return passed(f"no {cfg.path}: containerd uses its built-in defaults", seen=where)
    if not cfg.errors:
        return passed(f"{', '.join(cfg.files)} parse{'s' if len(cfg.files) == 1 else ''}", seen=where)
    template = ctx.containerd_location.template(ctx.hostfs)
    return failed(
        f"{cfg.errors[0].path} is not valid TOML" if cfg.errors[0].line else f"{cfg.errors[0].path} cannot be read",
        seen="\n".join(str(e) for e in cfg.errors) + "\n" + where,
        why="containerd exits at start with \"failed to load TOML\"; with it down the kubelet "
        "reports the node NotReady and no pod starts.",
        fix=(f"Fix the template {template}: {cfg.path} is written from it at every start.\n" if template else
         f"Fix the line shown, or start from a fresh default and re-apply your changes:\n"
         f"containerd config default > {cfg.path}\n")
        + f"containerd -c {cfg.path} config dump   # prints what containerd would load, or the error\n"
        + ctx.containerd_location.restart,
        refs=[REF_CONFIG],
    )


_V2_ONLY_KEYS = ("containerd", "cni", "sandbox_image", "registry", "restrict_oom_score_adj",
                 "enable_selinux", "image_pull_progress_timeout", "max_container_log_line_size")


@check("containerd.config.version", Severity.WARNING, requires=CONTAINERD_CONFIG)
def config_version(ctx):
    """Section names depend on the config's `version`; tables under the other
    version's names are silently ignored, the classic "my setting does nothing"."""
    cfg = ctx.containerd
    plugins = cfg.plugins
    rv = ctx.runtime_version
    seen = f"{cfg.path}: version = {cfg.declared_version if cfg.declared_version is not None else '(absent: 1)'}"
    if rv:
        seen += f"; containerd {rv[0]}.{rv[1]} answers CRI"
    if cfg.version == 3 and rv and rv[0] < 2:
        return failed(
            f"version 3 config on containerd {rv[0]}.{rv[1]}", seen=seen,
            why="containerd 1.x only reads versions 1 and 2; it refuses to start on version 3.",
            fix="Use `version = 2` with plugins.\"io.containerd.grpc.v1.cri\" tables on containerd 1.x, "
            "or upgrade containerd to 2.x.", refs=[REF_CONFIG])
    if cfg.version == 3:
        stale = [k for k in _V2_ONLY_KEYS if k in (plugins.get(cfacts.CRI_V2) or {})]
        if stale:
            return failed(
                f"version 3 config with version 2 CRI settings that containerd 2.x ignores: {', '.join(stale)}",
                seen=seen + f"; [plugins.\"{cfacts.CRI_V2}\"] holds {', '.join(stale)}",
                why="In version 3 runtimes, cni and oom settings live in io.containerd.cri.v1.runtime and "
                "registry/sandbox image in io.containerd.cri.v1.images; the old table's keys are ignored "
                "without a word, so the node runs on defaults (e.g. SystemdCgroup=false).",
                fix="Move them:\n"
                + toml_snippet(f'plugins."{cfacts.CRI_RUNTIME_V3}".containerd.runtimes.runc.options',
                               "SystemdCgroup = true")
                + "\n" + toml_snippet(f'plugins."{cfacts.CRI_IMAGES_V3}".pinned_images',
                                      'sandbox = "registry.k8s.io/pause:3.10"')
                + "\n# or let containerd convert it: containerd config migrate > config.toml.new",
                refs=[REF_CONFIG])
        return passed("version 3 with version 3 section names", seen=seen)
    if cfg.version == 2:
        v3 = [n for n in (cfacts.CRI_RUNTIME_V3, cfacts.CRI_IMAGES_V3) if n in plugins]
        if v3:
            make = warned if not rv or rv[0] < 2 else passed
            if make is warned:
                return warned(
                    f"version 2 config holding version 3 tables: {', '.join(v3)}", seen=seen,
                    why="containerd 1.x ignores these tables; containerd 2.x migrates a version 2 file and "
                    "may override them with the converted v2 values.",
                    fix="Pick one version: put the settings under plugins.\"io.containerd.grpc.v1.cri\" "
                    "(version 2) or set `version = 3` and drop the v2 CRI table.", refs=[REF_CONFIG])
        if rv and rv[0] >= 2:
            # Seen on 2.1.9: "Configuration migrated from version 2, use `containerd config migrate`
            # to avoid migration" at every start; the settings apply.
            seen += ("; containerd 2.x converts a version 2 file in memory at every start "
                     "(`containerd config migrate` prints it as version 3)")
        return passed("version 2", seen=seen)
    long_names = [n for n in plugins if n.startswith("io.containerd.")]
    why = ("Without a `version` line containerd reads version 1, where plugins are keyed by short "
           "names ([plugins.cri]); version 1 is deprecated and tables under long names are ignored.")
    fix = ("Add `version = 2` as the first line (containerd 1.x) or `version = 3` (containerd 2.x), "
           "then check the section names; `containerd config migrate` converts a file on 2.x.")
    if long_names:
        return failed("no `version` line, so these tables are ignored: " + ", ".join(long_names),
                      seen=seen, why=why, fix=fix, refs=[REF_CONFIG])
    return warned("no `version` line: version 1 semantics (deprecated)", seen=seen, why=why, fix=fix, refs=[REF_CONFIG])


def _ignored_v3_keys(cfg: cfacts.ContainerdConfig) -> list[tuple[str, str]]:
    """(key, where it belongs) for keys of the v3 CRI tables that 2.x drops."""
    found = []
    for table, known in cfacts.CRI_V3_KEYS.items():
        section = cfg.plugins.get(table)
        for key in section if isinstance(section, dict) else ():
            if key in known:
                continue
            other = next((t for t, keys in cfacts.CRI_V3_KEYS.items() if key in keys), None)
            home = (cfacts.V2_ONLY_KEYS.get(key) or (f'[plugins."{other}"] {key}' if other else
                    "nowhere: no containerd 2.x release knows this key (a typo?)"))
            found.append((f'[plugins."{table}"] {key}', home))
    return found


@check("containerd.config.ignored_keys", Severity.WARNING, requires=CONTAINERD_CONFIG)
def ignored_keys(ctx):
    """Keys in a version 3 config's CRI tables that containerd 2.x ignores with
    only a log line ("Ignoring unknown key in TOML for plugin"): a version 2
    key such as sandbox_image left under io.containerd.cri.v1.images, or a key
    in the other v3 table."""
    cfg = ctx.containerd
    if cfg.version < 3:
        return passed(f"version {cfg.version} config: its CRI table is checked by containerd.config.version")
    found = _ignored_v3_keys(cfg)
    seen = f"merged from {', '.join(cfg.files)}"
    if not found:
        return passed("every key in the version 3 CRI tables is one containerd 2.x reads", seen=seen)
    return warned(
        f"{len(found)} setting(s) containerd 2.x ignores: {', '.join(k for k, _ in found)}",
        seen="\n".join(f"{k}: belongs in {home}" for k, home in found) + "\n" + seen,
        why="containerd logs \"Ignoring unknown key in TOML for plugin\" once at start and runs on the "
        "default instead (for sandbox_image: registry.k8s.io/pause:3.10, pulled on every air-gapped node).",
        fix=config_fix(ctx, "\n".join(f"# {k} -> {home}" for k, home in found))
        + "\ncontainerd config migrate   # prints a version 2 file converted to version 3",
        refs=[REF_CONFIG, REF_CONFIG_V3])


_CRI_NAMES = ("cri", cfacts.CRI_V2, cfacts.CRI_RUNTIME_V3, cfacts.CRI_IMAGES_V3)


@check("containerd.cri.disabled", Severity.CRITICAL, requires=CONTAINERD_CONFIG)
def cri_disabled(ctx):
    """Docker's containerd.io package ships `disabled_plugins = ["cri"]`: the
    kubelet then finds no CRI service at all."""
    cfg = ctx.containerd
    hit = [p for p in cfg.disabled_plugins if p in _CRI_NAMES]
    seen = f"disabled_plugins = {cfg.disabled_plugins!r} ({', '.join(cfg.files)})"
    short = [p for p in cfg.disabled_plugins if "." not in p]
    if cfg.version >= 2 and short:
        # Seen on containerd 1.6.20: a version 2 file with a short plugin name
        # exits at start: 'invalid disabled plugin URI "cri" expect io.containerd.x.vx'.
        return failed(
            f"containerd refuses to start: short plugin name(s) {', '.join(short)} in a version {cfg.version} config",
            seen=seen,
            why="Only version 1 configs take short plugin names; containerd exits with \"invalid disabled "
            "plugin URI\" and the node has no runtime at all.",
            fix=f"Remove {', '.join(repr(x) for x in short)} from disabled_plugins (to keep CRI enabled, which "
            "Kubernetes needs). " + config_fix(ctx, f"disabled_plugins = {[p for p in cfg.disabled_plugins if p not in short]!r}",
                                               dropin=False),
            refs=[REF_CONFIG])
    if not hit:
        return passed("the CRI plugin is enabled", seen=seen)
    return failed(
        f"containerd's CRI plugin is disabled ({', '.join(hit)})",
        seen=seen,
        why="The kubelet fails with \"unknown service runtime.v1.RuntimeService\" and the node never "
        "becomes Ready. The containerd.io package (Docker's) ships this line.",
        fix=f"Remove {', '.join(repr(h) for h in hit)} from disabled_plugins. "
        + config_fix(ctx, f"disabled_plugins = {[p for p in cfg.disabled_plugins if p not in hit]!r}", dropin=False),
        refs=[REF_TROUBLESHOOT, REF_CONFIG],
    )


@check("containerd.cgroup_driver", Severity.CRITICAL, requires=CONTAINERD_CONFIG)
def cgroup_driver(ctx):
    """runc's SystemdCgroup must agree with the kubelet's cgroupDriver."""
    cfg = ctx.containerd
    opts = cfg.runtime_options()
    systemd = opts.get("SystemdCgroup", False) is True
    runtime_driver = "systemd" if systemd else "cgroupfs"
    where = f"SystemdCgroup = {str(systemd).lower()} in [{cfg.runtime_options_table()}]" + (
        "" if "SystemdCgroup" in opts else " (unset: false)")
    snippet = toml_snippet(cfg.runtime_options_table(), "SystemdCgroup = true")
    kubelet = ctx.kubelet
    if kubelet.present:
        use = ctx.kubelet_cgroup_driver
        seen = f"containerd: {where}; kubelet: {use.driver} ({use.where})"
        if use.driver != runtime_driver:
            make = failed if use.certain else warned
            return make(
                f"containerd uses {runtime_driver}, the kubelet {use.driver}"
                + ("" if use.certain else " (unless the kubelet takes the runtime's driver)"),
                seen=seen,
                why="Two cgroup managers fight over the same cgroups: pods fail with \"expected cgroupsPath "
                "to be of format slice:prefix:name\" or \"misconfiguration: kubelet cgroup driver\", "
                "and under memory pressure the node becomes unstable.",
                fix=(config_fix(ctx, snippet) + "   # and keep the kubelet on cgroupDriver: systemd"
                     if use.driver == "systemd" else
                     "Set the kubelet to systemd (cgroupDriver: systemd in /var/lib/kubelet/config.yaml) "
                     f"and containerd to match. {config_fix(ctx, snippet)}; then restart the kubelet"),
                refs=[REF_CGROUP_DRIVER, REF_DRIVER_FROM_CRI],
            )
    else:
        seen = f"containerd: {where}; no kubelet configuration found"
    if runtime_driver == "cgroupfs" and ctx.cgroups.version == 2:
        return warned(
            "cgroupfs driver on a cgroup v2 host",
            seen=seen,
            why="On cgroup v2 hosts booted by systemd, systemd is the recommended driver: with cgroupfs "
            "two managers own the hierarchy and resource pressure handling is less stable.",
            fix=f"{config_fix(ctx, snippet)}\nand cgroupDriver: systemd in the kubelet's config.yaml; restart the kubelet",
            refs=[REF_CGROUP_DRIVER],
        )
    return passed(f"cgroup driver {runtime_driver}" + (" matches the kubelet" if kubelet.present else ""), seen=seen)


def _removed_keys(cfg: cfacts.ContainerdConfig) -> list[str]:
    """Keys containerd 2.0 removed (RELEASES.md, "Deprecated config properties")."""
    found = []
    rt = cfg.runtime_section
    name = cfg.runtime_section_name
    if "systemd_cgroup" in rt:
        found.append(f'plugins."{name}".systemd_cgroup')
    ctrd = rt.get("containerd")
    if not isinstance(ctrd, dict):
        ctrd = {}
    for key in ("default_runtime", "untrusted_workload_runtime"):
        if key in ctrd:
            found.append(f'plugins."{name}".containerd.{key}')
    for rname, runtime in (ctrd.get("runtimes") or {}).items():
        if not isinstance(runtime, dict):
            continue
        for key in ("runtime_engine", "runtime_root"):
            if key in runtime:
                found.append(f'plugins."{name}".containerd.runtimes.{rname}.{key}')
        if runtime.get("runtime_type") in ("io.containerd.runtime.v1.linux", "io.containerd.runc.v1"):
            found.append(f'plugins."{name}".containerd.runtimes.{rname}.runtime_type = "{runtime["runtime_type"]}"')
    if "auths" in cfg.registry():
        found.append(f"{cfg.registry_table()}.auths")
    if "io.containerd.snapshotter.v1.aufs" in cfg.plugins or (ctrd.get("snapshotter") == "aufs"):
        found.append("aufs snapshotter")
    return found


def _get_runtime_type(cfg: cfacts.ContainerdConfig) -> str:
    """The default runtime's runtime_type (containerd's default: runc.v2)."""
    runtime = cfacts.dig(cfg.runtime_section, "containerd", "runtimes", cfg.default_runtime_name)
    value = runtime.get("runtime_type") if isinstance(runtime, dict) else None
    return str(value or "io.containerd.runc.v2")


@check("containerd.config.removed_keys", Severity.WARNING, requires=CONTAINERD_CONFIG)
def removed_keys(ctx):
    """Settings containerd 2.0 removed: ignored or fatal after an upgrade."""
    cfg = ctx.containerd
    found = _removed_keys(cfg)
    if not found:
        return passed("no settings that containerd 2.0 removed")
    rv = ctx.runtime_version
    on_2x = (rv and rv[0] >= 2) or cfg.version >= 3
    runtime_type = _get_runtime_type(cfg)
    # containerd 1.5-1.7 reject systemd_cgroup unless the default runtime is the
    # old io.containerd.runtime.v1.linux: "`systemd_cgroup` only works for
    # runtime io.containerd.runtime.v1.linux", and the CRI plugin does not load.
    fatal_now = any(f.endswith(".systemd_cgroup") for f in found) and runtime_type != "io.containerd.runtime.v1.linux"
    make = failed if on_2x or fatal_now else warned
    return make(
        f"{len(found)} setting(s) removed in containerd 2.0" + (" (this is 2.x)" if on_2x else "")
        + ("; systemd_cgroup with runc.v2 stops the CRI plugin" if fatal_now and not on_2x else ""),
        seen="\n".join(found),
        why="containerd 2.0 no longer reads them: the behaviour they set silently changes (or containerd "
        "refuses to start), typically right after a package upgrade.",
        fix="systemd_cgroup -> SystemdCgroup = true in the runc runtime's options\n"
        "default_runtime/untrusted_workload_runtime -> default_runtime_name and runtimes.<name>\n"
        "runtime_engine/runtime_root/io.containerd.runtime.v1.linux -> runtime_type = \"io.containerd.runc.v2\"\n"
        "registry.auths -> credentials in registry.configs.\"<host>\".auth or a credential helper\n"
        "On 2.x, `containerd config migrate` prints the converted file.",
        refs=[REF_RELEASES],
    )


@check("containerd.sandbox_image", Severity.WARNING, requires=(RUNS_CONTAINERD, CONTAINERD_CONFIG_PARSES))
def sandbox_image(ctx):
    """The pause image: the same one the kubelet expects, and already in the
    image store (an unpullable pause image blocks every pod on air-gapped nodes)."""
    cfg = ctx.containerd
    image, explicit = cfg.sandbox_image()
    seen = [f"containerd: {image} ({cfg.sandbox_image_key() if explicit else 'built-in default'})"]
    kubelet_image = ctx.kubelet.flags.get("pod-infra-container-image")
    problems = []
    if not _pinned_version(image):
        problems.append(f"{image} is not pinned to a version (no tag, or :latest)")
    if kubelet_image:
        seen.append(f"kubelet: --pod-infra-container-image={kubelet_image} ({ctx.kubelet.flag_sources['pod-infra-container-image']})")
        if kubelet_image != image:
            problems.append("the kubelet names a different pause image than containerd uses")
    images = ctx.cri("list_images")
    if isinstance(images, CriError):
        seen.append(f"image store: not checked ({images})")
    else:
        match = next((i for i in images if image in i.tags or _same_image(image, i.tags)), None)
        if match is None:
            problems.append(f"{image} is not in the image store")
            seen.append("image store: absent")
        else:
            seen.append(f"image store: present, pinned={'yes' if match.pinned else 'no'}")
    if not problems:
        return passed(f"sandbox image {image}", seen="\n".join(seen))
    return warned(
        "; ".join(problems),
        seen="\n".join(seen),
        why="containerd, not the kubelet, pulls the pause image for every new pod; if it is missing and "
        "the registry is unreachable (air-gapped, proxy) every pod stays in ContainerCreating, and "
        "the kubelet's image GC may delete an image it does not know is the sandbox image.",
        fix=config_fix(ctx, toml_snippet(f'plugins."{cfg.images_section_name}"' + (".pinned_images" if cfg.version >= 3 else ""),
                                     ("sandbox" if cfg.version >= 3 else "sandbox_image") + f' = "{kubelet_image or image}"'))
        + f"\nctr{_ctr_address(ctx)} -n k8s.io images pull {kubelet_image or image}   # or import it on air-gapped nodes\n"
        "and drop --pod-infra-container-image from the kubelet flags (deprecated since 1.27)",
        refs=[REF_CONFIG, REF_TROUBLESHOOT],
    )


def _ctr_address(ctx) -> str:
    address = ctx.containerd_location.address
    return "" if address == cfacts.DEFAULT_ADDRESS else f" -a {address}"


def _pinned_version(image: str) -> bool:
    """A digest, or a tag other than latest: the pause image must not change under a running node."""
    if "@sha256:" in image:
        return True
    name = image.rsplit("/", 1)[-1]
    return ":" in name and not name.endswith(":latest")


def normalize_image(ref: str) -> str:
    """An image reference as containerd stores it (docker/reference
    ParseNormalizedNamed, then TagNameOnly): a first component without a dot
    or a port that is not `localhost` is a Docker Hub path (`docker.io/`, and
    `library/` before a lone name; `index.docker.io` is docker.io), and no
    tag or digest means `:latest`."""
    first, slash, _ = ref.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        ref = "docker.io/" + ref
    domain, _, path = ref.partition("/")
    if domain == "index.docker.io":  # the legacy name of Docker Hub
        domain, ref = "docker.io", f"docker.io/{path}"
    if domain == "docker.io" and "/" not in path:
        ref = f"docker.io/library/{path}"
    name = ref.rsplit("/", 1)[-1]
    return ref if "@" in ref or ":" in name else ref + ":latest"


def _same_image(image: str, tags) -> bool:
    """containerd keeps fully qualified names: rancher/mirrored-pause:3.6 is
    docker.io/rancher/mirrored-pause:3.6 in its store."""
    return normalize_image(image) in {normalize_image(t) for t in tags}


@check("containerd.registry.mirrors", Severity.WARNING, requires=CONTAINERD_CONFIG)
def registry_mirrors(ctx):
    """`registry.mirrors`/`configs`/`auths` are deprecated, and containerd's
    CRI plugin refuses `mirrors` together with `config_path`."""
    cfg = ctx.containerd
    reg = cfg.registry()
    old = [k for k in ("mirrors", "configs", "auths") if reg.get(k)]
    table = cfg.registry_table()
    if not old:
        return passed("no deprecated registry settings" + (f"; config_path = {reg['config_path']}" if reg.get("config_path") else ""))
    seen = f"[{table}] sets {', '.join(old)}" + (f" and config_path = {reg['config_path']!r}" if reg.get("config_path") else "")
    fix = (f"Move each mirror to {reg.get('config_path') or '/etc/containerd/certs.d'}/<registry>/hosts.toml:\n"
           'server = "https://registry-1.docker.io"\n[host."https://mirror.example.com"]\n'
           '  capabilities = ["pull", "resolve"]\n'
           f"and drop {', '.join(old)} from [{table}]. "
           + config_fix(ctx, toml_snippet(table, f'config_path = "{reg.get("config_path") or "/etc/containerd/certs.d"}"')))
    if reg.get("config_path") and reg.get("mirrors"):
        return failed(
            "registry.mirrors together with registry.config_path",
            seen=seen,
            why="containerd refuses the combination (\"`mirrors` cannot be set when `config_path` is "
            "provided\"): the CRI plugin does not load and the kubelet sees no runtime.",
            fix=fix, refs=[REF_HOSTS])
    return warned(
        f"deprecated registry settings: {', '.join(old)}",
        seen=seen,
        why="registry.mirrors and configs are deprecated since containerd 1.5 (auths removed in 2.0) in "
        "favour of hosts.toml files under config_path; they go away on a later upgrade.",
        fix=fix, refs=[REF_HOSTS])


# containerd looks a registry "host[:port]" up as <config_path>/host_port_ (the
# port form, tried first), then <config_path>/host:port, then _default
# (core/remotes/docker/config: hostPaths, hostDirectory; 1.7 and 2.x alike).
_HOST_DIR_RE = re.compile(r"^(_default|([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9a-fA-F:]+\])(:\d{1,5}|_\d{1,5}_)?)$")
_CAPABILITIES = ("pull", "resolve", "push")


def hosts_url(server: str) -> str | None:
    """The URL containerd makes of a `server` or [host."..."] value
    (parseHostConfig: "https://" unless it starts with "http"), None if unusable."""
    from urllib.parse import urlsplit

    url = server if server.startswith("http") else "https://" + server
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme in ("http", "https") and parts.hostname else None


def _host_entry_problems(f: str, label: str, entry: dict, base: str, hostfs) -> list[str]:
    problems = []
    caps = entry.get("capabilities")
    for c in caps if isinstance(caps, list) else []:
        if str(c).lower() not in _CAPABILITIES:
            problems.append(f"{f}: {label}: unknown capability {c!r}: containerd rejects the whole file "
                            "and falls back to plain certificate files")
    for key in ("ca", "client"):
        value = entry.get(key)
        paths = [value] if isinstance(value, str) else [
            p for item in (value if isinstance(value, list) else []) for p in (item if isinstance(item, list) else [item])]
        for p in paths:
            if isinstance(p, str) and p and not hostfs.is_file(p if os.path.isabs(p) else os.path.join(base, p)):
                problems.append(f"{f}: {label}: {key} file {p} does not exist (pulls through it fail TLS setup)")
    return problems


def _hosts_problems(ctx, config_path: str) -> tuple[list[str], list[str]]:
    problems, seen = [], []
    names = list_dir(ctx.hostfs, config_path)
    for name in names:
        d = os.path.join(config_path, name)
        if not ctx.hostfs.is_dir(d):
            continue
        if not _HOST_DIR_RE.match(name):
            problems.append(f"{d}: directory name {name!r} is not a registry host[:port] (containerd never looks it up)")
            continue
        port_form = re.sub(r":(\d+)$", r"_\1_", name) if not name.startswith("[") or "]:" in name else name
        if port_form != name and port_form in names:
            problems.append(f"{d}: shadowed by {port_form}, which containerd looks up first")
        f = os.path.join(d, "hosts.toml")
        if not ctx.hostfs.exists(f):
            continue
        data, err = parse_toml(ctx.hostfs, f)
        if err:
            problems.append(f"{err} (containerd falls back to plain certificate files: the mirrors are unused)")
            continue
        server = data.get("server")
        hosts = data.get("host")
        if not isinstance(hosts, dict):
            hosts = {}
        order = []
        for h, entry in hosts.items():
            url = hosts_url(h)
            if url is None:
                problems.append(f"{f}: [host.{h!r}] is not a usable registry URL")
            else:
                order.append(url)
            problems += _host_entry_problems(f, f"[host.{h!r}]", entry if isinstance(entry, dict) else {}, d, ctx.hostfs)
        if server is not None:
            url = hosts_url(server) if isinstance(server, str) else None
            if url is None:
                problems.append(f"{f}: server = {server!r} is not a usable registry URL")
            else:
                order.append(url)
        problems += _host_entry_problems(f, "top level", data, d, ctx.hostfs)
        if server is None and not hosts:
            problems.append(f"{f}: neither `server` nor any [host.\"...\"] entry")
        seen.append(f"{f}: tries {' then '.join(order) or 'nothing'}")
    return problems, seen


@check("containerd.registry.hosts", Severity.WARNING, requires=CONTAINERD_CONFIG)
def registry_hosts(ctx):
    """Every hosts.toml under config_path, read as containerd resolves it: a
    directory named host:port or host_port_ (tried first) or _default, hosts
    without a scheme taken as https://, capabilities and ca/client files
    containerd accepts; a wrong one is silently unused."""
    config_path = ctx.containerd.registry().get("config_path")
    if not config_path:
        return skipped("registry.config_path is not set (no hosts.toml directory)")
    roots = cfacts.registry_roots(str(config_path))
    existing = [r for r in roots if ctx.hostfs.is_dir(r)]
    if not existing:
        return warned(f"config_path {config_path} does not exist", seen=f"config_path = {config_path!r}",
                      why="Every pull goes straight to the upstream registry, ignoring the mirrors you meant.",
                      fix=f"mkdir -p {roots[0]}/docker.io   # and write hosts.toml files there", refs=[REF_HOSTS])
    problems, seen = [], []
    for root in existing:
        root_problems, root_seen = _hosts_problems(ctx, root)
        problems += root_problems
        seen += root_seen
    if len(roots) > 1:
        seen.append(f"config_path lists {len(roots)} directories; for each registry the first that has its "
                    f"directory wins: {', '.join(r + ('' if r in existing else ' (absent)') for r in roots)}")
    if not problems:
        return passed(f"hosts.toml files under {config_path} are valid", seen="\n".join(seen))
    return warned(
        f"{len(problems)} problem(s) in {config_path}",
        seen="\n".join(problems + seen),
        why="containerd skips a registry directory it cannot parse or does not look up, so pulls bypass "
        "the mirror or fail on air-gapped nodes.",
        fix=f"{config_path}/docker.io/hosts.toml:\n"
        'server = "https://registry-1.docker.io"\n[host."https://mirror.example.com"]\n'
        '  capabilities = ["pull", "resolve"]',
        refs=[REF_HOSTS])


@check("containerd.oom_score_adj", Severity.CRITICAL, requires=CONTAINERD_CONFIG)
def oom_score_adj(ctx):
    """Without CAP_SYS_RESOURCE (user namespaces, some sandboxes) runc cannot
    lower a sandbox's oom_score_adj, and every RunPodSandbox fails."""
    proc = ctx.process("containerd")
    if proc is None:
        return skipped("no containerd process found under /proc")
    restricted = ctx.containerd.runtime_section.get("restrict_oom_score_adj") is True
    userns = not procfs.in_initial_user_ns(proc.uid_map)
    no_cap = proc.cap_eff is not None and not (proc.cap_eff >> procfs.CAP_SYS_RESOURCE) & 1
    seen = (f"containerd pid {proc.pid}: user namespace={'yes' if userns else 'initial'}, "
            f"CAP_SYS_RESOURCE={'no' if no_cap else 'yes'}; restrict_oom_score_adj={str(restricted).lower()}")
    if not (userns or no_cap):
        return passed("containerd may set oom_score_adj", seen=seen)
    if restricted:
        return passed("restricted environment and restrict_oom_score_adj = true", seen=seen)
    return failed(
        "containerd cannot lower oom_score_adj and restrict_oom_score_adj is not set",
        seen=seen,
        # Seen with containerd 1.6.20/runc 1.1.5 without CAP_SYS_RESOURCE:
        why="RunPodSandbox fails with \"can't get final child's PID from pipe: EOF\" (runc: "
        "\"failed to update /proc/self/oom_score_adj: Permission denied\"): no pod can start.",
        fix=config_fix(ctx, toml_snippet(f'plugins."{ctx.containerd.runtime_section_name}"', "restrict_oom_score_adj = true")),
        refs=[REF_CONFIG],
    )


@check("containerd.service", Severity.CRITICAL, requires=(RUNS_CONTAINERD,))
def service(ctx):
    """containerd.service must keep containers alive across a containerd
    restart (KillMode=process) and not cap their tasks or files."""
    unit = ctx.unit("containerd.service")
    s, files = unit.settings, unit.files
    if not files:
        layout = ctx.containerd_location.layout.name
        if layout in ("k3s", "rke2", "microk8s"):
            return skipped(f"containerd is started by {layout}, not by a containerd.service unit")
        return skipped("no containerd.service unit (not managed by systemd)")
    seen = f"{', '.join(files)}: " + " ".join(f"{k}={s.get(k, '(unset)')}" for k in ("KillMode", "Delegate", "TasksMax", "LimitNOFILE"))
    fails, warns = [], []
    if s.get("KillMode", "control-group") != "process":
        fails.append("KillMode is not process: restarting containerd kills every container's shim")
    if s.get("Delegate", "no").lower() not in ("yes", "true", "1"):
        warns.append("Delegate is not yes: systemd may reclaim the cgroups containerd creates")
    if s.get("TasksMax", "") != "infinity":
        warns.append("TasksMax is not infinity: systemd's default (15% of pid_max) caps all containers' threads")
    nofile = s.get("LimitNOFILE", "")
    if nofile.isdigit() and int(nofile) < 65536:
        warns.append(f"LimitNOFILE={nofile} is low: containerd runs out of file descriptors on busy nodes")
    if not fails and not warns:
        return passed("KillMode=process, Delegate=yes, TasksMax=infinity", seen=seen)
    make = failed if fails else warned
    return make(
        "; ".join(fails + warns).split(":")[0] if len(fails + warns) == 1 else f"{len(fails + warns)} unit settings are wrong",
        seen=seen + "\n" + "\n".join(fails + warns),
        why="These are the settings containerd's own unit file ships; without them a containerd restart "
        "or upgrade takes every pod down, or pods fail under load.",
        fix="mkdir -p /etc/systemd/system/containerd.service.d\n"
        "cat > /etc/systemd/system/containerd.service.d/10-k8s.conf <<'EOF'\n"
        "[Service]\nKillMode=process\nDelegate=yes\nTasksMax=infinity\nLimitNOFILE=1048576\nEOF\n"
        "systemctl daemon-reload && systemctl restart containerd",
        refs=["https://github.com/containerd/containerd/blob/main/containerd.service"],
    )


@check("containerd.metrics", Severity.INFO, requires=CONTAINERD_CONFIG)
def metrics(ctx):
    """Whether containerd serves its own Prometheus metrics ([metrics] address,
    off by default): information for the dashboards, which can scrape it beside
    this exporter."""
    cfg = ctx.containerd
    table = cfg.data.get("metrics") if isinstance(cfg.data.get("metrics"), dict) else {}
    address = str(table.get("address") or "")
    if address:
        return passed(f"containerd serves metrics on http://{address}/v1/metrics",
                      seen=f"[metrics] address = {address!r} ({', '.join(cfg.files)})")
    return passed("containerd's own metrics endpoint is off (the default)",
                  seen=f"no [metrics] address in {', '.join(cfg.files)}; to serve it:\n"
                  + toml_snippet("metrics", 'address = "127.0.0.1:1338"'))
