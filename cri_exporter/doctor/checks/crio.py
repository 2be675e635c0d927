"""CRI-O's configuration: crio.conf plus crio.conf.d drop-ins (facts/crio.py)."""
from __future__ import annotations

from cri_exporter.cri.client import CriError
from cri_exporter.doctor.model import Severity, failed, passed, warned
from cri_exporter.doctor.registry import check
from cri_exporter.doctor.requirements import CRIO_CONFIG, CRIO_CONFIG_PARSES, RUNS_CRIO

REF_CONF = "https://github.com/cri-o/cri-o/blob/main/docs/crio.conf.5.md"
REF_CGROUP = "https://kubernetes.io/docs/setup/production-environment/container-runtimes/#cri-o"
REF_MONITOR = "https://github.com/cri-o/cri-o/blob/v1.36.3/pkg/config/config.go"  # TranslateMonitorFieldsForHandler
DROPIN_FIX = "cat > /etc/crio/crio.conf.d/99-doctor.conf <<'EOF'\n{body}\nEOF\nsystemctl restart crio"


@check("crio.config.parse", Severity.CRITICAL, requires=(RUNS_CRIO,))
def config_parse(ctx):
    """CRI-O refuses to start when crio.conf or a drop-in is not valid TOML."""
    cfg = ctx.crio
    if not cfg.exists:
        return passed("no CRI-O config files: built-in defaults")
    if not cfg.errors:
        return passed(f"{len(cfg.files)} file(s) parse, read in this order", seen="\n".join(cfg.files))
    return failed(
        f"{cfg.errors[0].path} is not valid TOML",
        seen="\n".join(str(e) for e in cfg.errors) + "\nread order: " + ", ".join(cfg.files),
        why="CRI-O exits at start; the kubelet then finds no runtime and the node goes NotReady.",
        fix="Fix the line shown; `crio config` prints the merged configuration CRI-O would run with.",
        refs=[REF_CONF],
    )


@check("crio.cgroup_manager", Severity.CRITICAL, requires=CRIO_CONFIG)
def cgroup_manager(ctx):
    """CRI-O's cgroup_manager must agree with the kubelet's cgroupDriver."""
    manager, where = ctx.crio.get("crio.runtime", "cgroup_manager")
    seen = f"cgroup_manager = {manager!r} ({where})"
    if ctx.kubelet.present:
        use = ctx.kubelet_cgroup_driver
        kdriver = use.driver
        seen += f"; kubelet: {kdriver} ({use.where})"
        if kdriver != manager:
            make = failed if use.certain else warned
            return make(
                f"CRI-O uses {manager}, the kubelet {kdriver}"
                + ("" if use.certain else " (unless the kubelet takes the runtime's driver)"), seen=seen,
                why="Pod creation fails (\"cgroup driver mismatch\"/invalid cgroup parent) or both fight over cgroups.",
                fix=DROPIN_FIX.format(body=f'[crio.runtime]\ncgroup_manager = "{kdriver}"'
                                  + ('\nconmon_cgroup = "pod"' if kdriver == "cgroupfs" else '\nconmon_cgroup = "system.slice"')),
                refs=[REF_CGROUP])
    if manager == "cgroupfs" and ctx.cgroups.version == 2:
        return warned("cgroupfs on a cgroup v2 host", seen=seen,
                      why="systemd is the recommended manager on cgroup v2 hosts booted by systemd.",
                      fix=DROPIN_FIX.format(body='[crio.runtime]\ncgroup_manager = "systemd"\nconmon_cgroup = "system.slice"')
                      + "\nand cgroupDriver: systemd in the kubelet's config.yaml", refs=[REF_CGROUP])
    return passed(f"cgroup manager {manager}", seen=seen)


def _monitor_cgroup_ok(manager: str, conmon: str, monitor: str, new_rules: bool) -> tuple[bool, str]:
    """CRI-O's TranslateMonitorFieldsForHandler (pkg/config/config.go): a set
    conmon_cgroup overrides the handler's monitor_cgroup; then, before 1.33,
    empty means system.slice whatever the manager (so cgroupfs needs "pod");
    from 1.33 (commit a4c67cc6c2) empty means system.slice only with systemd,
    and with cgroupfs system.slice is taken as empty. cgroupfs accepts "pod"
    or empty, systemd "pod" or a slice. -> (valid, the effective value)."""
    value = conmon or monitor or ""
    systemd = manager != "cgroupfs"
    if value == "" and (systemd or not new_rules):
        value = "system.slice"
    if not systemd:
        if new_rules and value == "system.slice":
            value = ""
        return value in ("pod", ""), value
    return value == "pod" or value.endswith(".slice"), value


def _oci_handlers(cfg) -> dict[str, str]:
    """Handler name -> its monitor_cgroup, for the handlers conmon monitors
    (runtime_type oci or unset); the built-in default when the files define none."""
    runtimes, _ = cfg.get("crio.runtime", "runtimes")
    handlers = {name: str((h or {}).get("monitor_cgroup") or "") for name, h in (runtimes or {}).items()
                if isinstance(h, dict) and str(h.get("runtime_type") or "oci") == "oci"}
    return handlers or {"(built-in default)": ""}


@check("crio.conmon_cgroup", Severity.CRITICAL, requires=CRIO_CONFIG)
def conmon_cgroup(ctx):
    """Each OCI handler's monitor cgroup (its monitor_cgroup, overridden by the
    deprecated conmon_cgroup when set) must suit the cgroup manager: "pod" or
    empty with cgroupfs, "pod" or a slice with systemd. CRI-O refuses other
    values at start; what empty means changed in 1.33."""
    manager, _ = ctx.crio.get("crio.runtime", "cgroup_manager")
    conmon, where = ctx.crio.get("crio.runtime", "conmon_cgroup")
    version = ctx.runtime_version if ctx.runtime_kind == "crio" else None
    pkg = ctx.packages.get("cri-o")
    version = version or (pkg.minor_tuple if pkg else None)
    rules = [True, False] if version is None else [version >= (1, 33)]
    seen = [f"cgroup_manager = {manager!r}; conmon_cgroup = {conmon!r} ({where}); "
            + (f"CRI-O {version[0]}.{version[1]}" if version else "CRI-O version unknown: judged by the rules before and from 1.33")]
    bad, unsure = [], []
    for name, monitor in _oci_handlers(ctx.crio).items():
        verdicts = [_monitor_cgroup_ok(manager, str(conmon or ""), monitor, r) for r in rules]
        seen.append(f"handler {name}: monitor_cgroup = {monitor!r} -> {verdicts[0][1]!r}")
        if not any(ok for ok, _ in verdicts):
            bad.append(name)
        elif not all(ok for ok, _ in verdicts):
            unsure.append(name)
    want = "pod" if manager == "cgroupfs" else "system.slice"
    fix = DROPIN_FIX.format(body=f'[crio.runtime]\nconmon_cgroup = "{want}"')
    why = "CRI-O refuses to start (\"cgroupfs manager conmon cgroup should be 'pod' or empty\" / \"conmon cgroup should be 'pod' or a systemd slice\")."
    if bad:
        return failed(f"the monitor cgroup of {', '.join(bad)} is invalid with cgroup_manager {manager}",
                      seen="\n".join(seen), why=why, fix=fix, refs=[REF_CONF, REF_MONITOR])
    if unsure:
        return warned(f"the monitor cgroup of {', '.join(unsure)} is refused by CRI-O before 1.33 (version unknown)",
                      seen="\n".join(seen), why=why + " Before 1.33 an empty value means system.slice even with cgroupfs.",
                      fix=fix, refs=[REF_CONF, REF_MONITOR])
    return passed(f"monitor cgroups fit {manager}", seen="\n".join(seen))


@check("crio.pause_image", Severity.WARNING, requires=(RUNS_CRIO, CRIO_CONFIG_PARSES))
def pause_image(ctx):
    """CRI-O's pause_image against the kubelet's flag, and present in the store."""
    image, where = ctx.crio.get("crio.image", "pause_image")
    seen = [f"CRI-O: {image} ({where})"]
    problems = []
    kimage = ctx.kubelet.flags.get("pod-infra-container-image")
    if kimage:
        seen.append(f"kubelet: --pod-infra-container-image={kimage}")
        if kimage != image:
            problems.append("the kubelet names a different pause image than CRI-O uses")
    images = ctx.cri("list_images")
    if isinstance(images, CriError):
        seen.append(f"image store: not checked ({images})")
    elif not any(image in i.tags for i in images):
        problems.append(f"{image} is not in the image store")
    if not problems:
        return passed(f"pause image {image}", seen="\n".join(seen))
    return warned("; ".join(problems), seen="\n".join(seen),
                  why="Every pod needs the pause image; missing on an air-gapped node, pods stay in ContainerCreating.",
                  fix=DROPIN_FIX.format(body=f'[crio.image]\npause_image = "{kimage or image}"')
                  + f"\ncrictl pull {kimage or image}", refs=[REF_CONF])


@check("crio.metrics", Severity.INFO, requires=CRIO_CONFIG)
def metrics(ctx):
    """Whether CRI-O serves its own Prometheus metrics ([crio.metrics]
    enable_metrics, off by default; metrics_host:metrics_port, 127.0.0.1:9090):
    information for the dashboards."""
    enabled, where = ctx.crio.get("crio.metrics", "enable_metrics")
    if enabled is True:
        host, _ = ctx.crio.get("crio.metrics", "metrics_host")
        port, _ = ctx.crio.get("crio.metrics", "metrics_port")
        return passed(f"CRI-O serves metrics on http://{host or '127.0.0.1'}:{port or 9090}/metrics",
                      seen=f"enable_metrics = true ({where})")
    return passed("CRI-O's own metrics endpoint is off (the default)",
                  seen=f"enable_metrics = {enabled!r} ({where}); to serve it:\n[crio.metrics]\nenable_metrics = true")
