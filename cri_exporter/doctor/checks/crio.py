"""CRI-O's configuration: crio.conf plus crio.conf.d drop-ins (facts/crio.py)."""
from __future__ import annotations

from cri_exporter.cri.client import CriError
from cri_exporter.doctor.model import Severity, failed, passed, warned
from cri_exporter.doctor.registry import check
from cri_exporter.doctor.requirements import CRIO_CONFIG, CRIO_CONFIG_PARSES, RUNS_CRIO

REF_CONF = "https://github.com/cri-o/cri-o/blob/main/docs/crio.conf.5.md"
REF_CGROUP = "https://kubernetes.io/docs/setup/production-environment/container-runtimes/#cri-o"
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


@check("crio.conmon_cgroup", Severity.CRITICAL, requires=CRIO_CONFIG)
def conmon_cgroup(ctx):
    """With cgroupfs, conmon must live in the pod's cgroup ("pod"); with systemd,
    "pod" or a slice. CRI-O refuses other values at start."""
    manager, _ = ctx.crio.get("crio.runtime", "cgroup_manager")
    value, where = ctx.crio.get("crio.runtime", "conmon_cgroup")
    seen = f"cgroup_manager = {manager!r}; conmon_cgroup = {value!r} ({where})"
    if manager == "cgroupfs":
        ok = value in ("pod", "")
        want = "pod"
    else:
        ok = value in ("pod", "") or str(value).endswith(".slice")
        want = "system.slice"
    if ok:
        return passed(f"conmon_cgroup {value!r} fits {manager}", seen=seen)
    return failed(
        f"conmon_cgroup {value!r} is invalid with cgroup_manager {manager}", seen=seen,
        why="CRI-O refuses to start (\"cgroupfs manager conmon cgroup should be 'pod' or empty\").",
        fix=DROPIN_FIX.format(body=f'[crio.runtime]\nconmon_cgroup = "{want}"'), refs=[REF_CONF])


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
