"""CRI-O's configuration: crio.conf plus crio.conf.d drop-ins (facts/crio.py)."""
from __future__ import annotations

from cri_exporter.cri.client import CriError
from cri_exporter.doctor.checks._common import not_this_runtime
from cri_exporter.doctor.model import Severity, failed, passed, skipped, warned
from cri_exporter.doctor.registry import check

REF_CONF = "https://github.com/cri-o/cri-o/blob/main/docs/crio.conf.5.md"
REF_CGROUP = "https://kubernetes.io/docs/setup/production-environment/container-runtimes/#cri-o"
DROPIN_FIX = "cat > /etc/crio/crio.conf.d/99-doctor.conf <<'EOF'\n{body}\nEOF\nsystemctl restart crio"


def _config_or_skip(ctx):
    skip = not_this_runtime(ctx, "crio")
    if skip:
        return skip
    if not ctx.crio.exists:
        return skipped("no /etc/crio/crio.conf nor drop-ins: CRI-O runs on its defaults")
    if ctx.crio.errors:
        return skipped("the CRI-O config does not parse (see crio.config.parse)")
    return None


@check("crio.config.parse", Severity.CRITICAL)
def config_parse(ctx):
    """CRI-O refuses to start when crio.conf or a drop-in is not valid TOML."""
    skip = not_this_runtime(ctx, "crio")
    if skip:
        return skip
    cfg = ctx.crio
    if not cfg.exists:
        return passed("no CRI-O config files: built-in defaults")
    if not cfg.errors:
        return passed(f"{len(cfg.files)} file(s) parse, read in this order", "\n".join(cfg.files))
    return failed(
        f"{cfg.errors[0].path} is not valid TOML",
        "\n".join(str(e) for e in cfg.errors) + "\nread order: " + ", ".join(cfg.files),
        "CRI-O exits at start; the kubelet then finds no runtime and the node goes NotReady.",
        "Fix the line shown; `crio config` prints the merged configuration CRI-O would run with.",
        [REF_CONF],
    )


@check("crio.cgroup_manager", Severity.CRITICAL)
def cgroup_manager(ctx):
    """CRI-O's cgroup_manager must agree with the kubelet's cgroupDriver."""
    skip = _config_or_skip(ctx)
    if skip:
        return skip
    manager, where = ctx.crio.get("crio.runtime", "cgroup_manager")
    seen = f"cgroup_manager = {manager!r} ({where})"
    if ctx.kubelet.present:
        kdriver, kwhere = ctx.kubelet.cgroup_driver()
        seen += f"; kubelet cgroupDriver={kdriver} ({kwhere})"
        if kdriver != manager:
            return failed(
                f"CRI-O uses {manager}, the kubelet {kdriver}", seen,
                "Pod creation fails (\"cgroup driver mismatch\"/invalid cgroup parent) or both fight over cgroups.",
                DROPIN_FIX.format(body=f'[crio.runtime]\ncgroup_manager = "{kdriver}"'
                                  + ('\nconmon_cgroup = "pod"' if kdriver == "cgroupfs" else '\nconmon_cgroup = "system.slice"')),
                [REF_CGROUP])
    if manager == "cgroupfs" and ctx.cgroups.version == 2:
        return warned("cgroupfs on a cgroup v2 host", seen,
                      "systemd is the recommended manager on cgroup v2 hosts booted by systemd.",
                      DROPIN_FIX.format(body='[crio.runtime]\ncgroup_manager = "systemd"\nconmon_cgroup = "system.slice"')
                      + "\nand cgroupDriver: systemd in the kubelet's config.yaml", [REF_CGROUP])
    return passed(f"cgroup manager {manager}", seen)


@check("crio.conmon_cgroup", Severity.CRITICAL)
def conmon_cgroup(ctx):
    """With cgroupfs, conmon must live in the pod's cgroup ("pod"); with systemd,
    "pod" or a slice. CRI-O refuses other values at start."""
    skip = _config_or_skip(ctx)
    if skip:
        return skip
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
        return passed(f"conmon_cgroup {value!r} fits {manager}", seen)
    return failed(
        f"conmon_cgroup {value!r} is invalid with cgroup_manager {manager}", seen,
        "CRI-O refuses to start (\"cgroupfs manager conmon cgroup should be 'pod' or empty\").",
        DROPIN_FIX.format(body=f'[crio.runtime]\nconmon_cgroup = "{want}"'), [REF_CONF])


@check("crio.pause_image", Severity.WARNING)
def pause_image(ctx):
    """CRI-O's pause_image against the kubelet's flag, and present in the store."""
    skip = not_this_runtime(ctx, "crio")
    if skip:
        return skip
    if ctx.crio.errors:
        return skipped("the CRI-O config does not parse (see crio.config.parse)")
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
        return passed(f"pause image {image}", "\n".join(seen))
    return warned("; ".join(problems), "\n".join(seen),
                  "Every pod needs the pause image; missing on an air-gapped node, pods stay in ContainerCreating.",
                  DROPIN_FIX.format(body=f'[crio.image]\npause_image = "{kimage or image}"')
                  + f"\ncrictl pull {kimage or image}", [REF_CONF])
