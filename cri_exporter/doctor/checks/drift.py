"""Drift: the config on disk against what the running runtime uses.

The most common reason a fix "did not work": the file was edited but the
runtime never restarted. Two signals: a config file newer than the
runtime's process, and (containerd) the running config that CRI Status
verbose returns in info["config"] (JSON, checked on containerd 1.6.20)
disagreeing with the file.
"""
from __future__ import annotations

import json
import os
import time

from cri_exporter.cri.client import CriError
from cri_exporter.doctor.checks._common import not_this_runtime
from cri_exporter.doctor.model import Severity, passed, skipped, warned
from cri_exporter.doctor.registry import check

REF = "https://github.com/containerd/containerd/blob/main/docs/cri/config.md"


def _newer_files(ctx, files, proc) -> list[str]:
    if proc is None or proc.start_time is None:
        return []
    out = []
    for f in files:
        try:
            mtime = os.stat(ctx.hostfs.path(f)).st_mtime
        except OSError:
            continue
        # One second of slack: /proc start times have clock-tick resolution.
        if mtime > proc.start_time + 1:
            out.append(f"{f} modified {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(mtime))}Z, "
                       f"after {proc.comm} (pid {proc.pid}) started "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(proc.start_time))}Z")
    return out


def _running_containerd_config(ctx) -> dict | None:
    s = ctx.cri("status")
    if isinstance(s, CriError):
        return None
    try:
        data = json.loads(s.info.get("config", ""))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _dig(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _config_differences(ctx, running: dict) -> list[str]:
    cfg = ctx.containerd
    diffs = []
    image, explicit = cfg.sandbox_image()
    pairs = [
        ("sandbox image", image if explicit else None, running.get("sandboxImage")),
        ("cni conf_dir", cfg.cni_conf_dir(), _dig(running, "cni", "confDir")),
        ("restrict_oom_score_adj", bool(cfg.runtime_section.get("restrict_oom_score_adj", False)),
         running.get("restrictOOMScoreAdj")),
        ("registry config_path", cfg.registry().get("config_path", ""), _dig(running, "registry", "configPath")),
    ]
    rt = cfg.default_runtime_name
    opts = _dig(running, "containerd", "runtimes", rt, "options")
    if _dig(running, "containerd", "runtimes", rt) is not None:
        pairs.append((f"runtimes.{rt}.options.SystemdCgroup", cfg.runtime_options().get("SystemdCgroup", False) is True,
                      (opts or {}).get("SystemdCgroup", False) is True))
    for name, on_disk, live in pairs:
        if on_disk is None or live is None:
            continue
        if on_disk != live:
            diffs.append(f"{name}: file says {on_disk!r}, running containerd uses {live!r}")
    return diffs


RESTART_FIX = "systemctl restart {unit}   # containers keep running (KillMode=process)\nthen run the doctor again"


@check("containerd.config.drift", Severity.WARNING)
def containerd_drift(ctx):
    """containerd runs with a config other than the one on disk."""
    skip = not_this_runtime(ctx, "containerd")
    if skip:
        return skip
    cfg = ctx.containerd
    if not cfg.exists or cfg.errors:
        return skipped("no parseable config file to compare")
    proc = ctx.process("containerd")
    newer = _newer_files(ctx, cfg.files, proc)
    running = _running_containerd_config(ctx)
    diffs = _config_differences(ctx, running) if running else []
    if proc is None and running is None:
        return skipped("neither the containerd process nor its running config (CRI Status) is visible")
    if not newer and not diffs:
        basis = [b for b, ok in (("file times against the process start", proc is not None),
                                 ("the running config from CRI Status", running is not None)) if ok]
        return passed("containerd runs the config on disk", "compared " + " and ".join(basis))
    return warned(
        "containerd runs a different config than the one on disk",
        "\n".join(newer + diffs),
        "Edits to config.toml take effect only when containerd restarts: the fix you made is not "
        "active yet, and it will become active, maybe unexpectedly, at the next restart or reboot.",
        RESTART_FIX.format(unit="containerd"), [REF])


@check("crio.config.drift", Severity.WARNING)
def crio_drift(ctx):
    """CRI-O's config files changed after CRI-O started."""
    skip = not_this_runtime(ctx, "crio")
    if skip:
        return skip
    proc = ctx.process("crio")
    if proc is None:
        return skipped("no crio process visible under /proc")
    if not ctx.crio.exists:
        return skipped("no CRI-O config files")
    newer = _newer_files(ctx, ctx.crio.files, proc)
    if not newer:
        return passed("no CRI-O config file changed since CRI-O started")
    return warned(
        "CRI-O config changed after CRI-O started", "\n".join(newer),
        "Most crio.conf settings take effect only at a restart (a few reload on SIGHUP): the change "
        "is not active yet.",
        RESTART_FIX.format(unit="crio"), ["https://github.com/cri-o/cri-o/blob/main/docs/crio.conf.5.md"])
