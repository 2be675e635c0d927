"""Drift: the config on disk against what the running runtime uses.

The most common reason a fix "did not work": the file was edited but the
runtime never restarted. Two signals: a config file newer than the
runtime's process, and the running config the runtime reports disagreeing
with the file:
- containerd: CRI Status verbose info["config"], the JSON of the CRI
  plugin's config. 1.6/1.7 marshal PluginConfig (sandboxImage, registry,
  containerd.runtimes, cni; checked on a real 1.6.20). 2.x marshal only the
  runtime half (criconfig.Config: containerd, cni, restrictOOMScoreAdj,
  containerdRootDir...), with no sandbox image and no registry, so those two
  cannot be compared there.
- CRI-O: GET /config on its own socket (what `crio status config` prints),
  the running config as TOML.
"""
from __future__ import annotations

import json
import os
import time

from cri_exporter.cri.client import CriError
from cri_exporter.doctor.facts.containerd import dig
from cri_exporter.doctor.facts.crio import api_socket as crio_api_socket
from cri_exporter.doctor.model import Severity, passed, skipped, warned
from cri_exporter.doctor.registry import check
from cri_exporter.doctor.requirements import RUNS_CONTAINERD, RUNS_CRIO

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


def _is_containerd_1x_shape(running: dict) -> bool:
    """1.x's PluginConfig carries sandboxImage at the top; 2.x's
    criconfig.Config has no image settings at all (they moved to the
    images plugin, which Status does not report)."""
    return "sandboxImage" in running


def _running_cni_bin_dirs(running: dict) -> list[str] | None:
    dirs = dig(running, "cni", "binDirs")  # 2.1+; binDir is migrated into it
    if isinstance(dirs, list) and dirs:
        return [str(d) for d in dirs]
    one = dig(running, "cni", "binDir")  # 1.x, 2.0
    return [str(one)] if isinstance(one, str) and one else None


def _norm_dirs(dirs):
    return None if dirs is None else [d.rstrip("/") or "/" for d in dirs]


def _config_differences(ctx, running: dict) -> list[str]:
    cfg = ctx.containerd
    diffs = []
    pairs = [
        ("cni conf_dir", cfg.cni_conf_dir().rstrip("/"), (dig(running, "cni", "confDir") or "").rstrip("/") or None),
        ("cni bin dirs", _norm_dirs(cfg.cni_bin_dirs()), _norm_dirs(_running_cni_bin_dirs(running))),
        ("restrict_oom_score_adj", bool(cfg.runtime_section.get("restrict_oom_score_adj", False)),
         running.get("restrictOOMScoreAdj")),
        ("default_runtime_name", cfg.default_runtime_name, dig(running, "containerd", "defaultRuntimeName") or None),
    ]
    if _is_containerd_1x_shape(running):
        image, explicit = cfg.sandbox_image()
        pairs += [
            ("sandbox image", image if explicit else None, running.get("sandboxImage")),
            ("registry config_path", cfg.registry().get("config_path", ""), dig(running, "registry", "configPath")),
        ]
    rt = cfg.default_runtime_name
    opts = dig(running, "containerd", "runtimes", rt, "options")
    if dig(running, "containerd", "runtimes", rt) is not None:
        pairs.append((f"runtimes.{rt}.options.SystemdCgroup", cfg.runtime_options().get("SystemdCgroup", False) is True,
                      (opts or {}).get("SystemdCgroup", False) is True))
    for name, on_disk, live in pairs:
        if on_disk is None or live is None:
            continue
        if on_disk != live:
            diffs.append(f"{name}: file says {on_disk!r}, running containerd uses {live!r}")
    return diffs


RESTART_FIX = "{command}   # containers keep running (KillMode=process)\nthen run the doctor again"


@check("containerd.config.drift", Severity.WARNING, requires=(RUNS_CONTAINERD,))
def containerd_drift(ctx):
    """containerd runs with a config other than the one on disk."""
    cfg = ctx.containerd
    if not cfg.exists or cfg.errors:
        return skipped("no parseable config file to compare")
    proc = ctx.process("containerd")
    template = ctx.containerd_location.template(ctx.hostfs)  # k3s/RKE2/microk8s write config.toml from it at start
    newer = _newer_files(ctx, cfg.files + ([template] if template else []), proc)
    running = _running_containerd_config(ctx)
    diffs = _config_differences(ctx, running) if running else []
    if proc is None and running is None:
        return skipped("neither the containerd process nor its running config (CRI Status) is visible")
    if not newer and not diffs:
        basis = [b for b, ok in (("file times against the process start", proc is not None),
                                 ("the running config from CRI Status", running is not None)) if ok]
        seen = "compared " + " and ".join(basis)
        if running is not None and not _is_containerd_1x_shape(running):
            seen += ("\n(containerd 2.x leaves the image settings out of Status: the sandbox image and "
                     "registry config_path were not compared)")
        return passed("containerd runs the config on disk", seen=seen)
    return warned(
        "containerd runs a different config than the one on disk",
        seen="\n".join(newer + diffs),
        why="Edits to config.toml take effect only when containerd restarts: the fix you made is not "
        "active yet, and it will become active, maybe unexpectedly, at the next restart or reboot.",
        fix=RESTART_FIX.format(command=ctx.containerd_location.restart), refs=[REF])


# (table in crio.conf, key): where the same setting sits in GET /config's TOML.
CRIO_COMPARED_KEYS = [
    ("crio", "root"), ("crio", "runroot"), ("crio", "storage_driver"),
    ("crio.runtime", "cgroup_manager"), ("crio.runtime", "conmon_cgroup"),
    ("crio.runtime", "default_runtime"), ("crio.image", "pause_image"),
]
# Handlers CRI-O adds by itself (crun since 1.31, runc before): present in
# the running config without any file naming them.
CRIO_BUILTIN_RUNTIMES = {"crun", "runc"}


def _same(a, b) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.rstrip("/") == b.rstrip("/")
    return bool(a == b)


def _crio_differences(cfg, running: dict) -> list[str]:
    """Only what the files set explicitly (or cgroup_manager, whose default
    is fixed): root, runroot and storage_driver otherwise come from
    storage.conf, and empty values are filled in by CRI-O at start."""
    diffs = []
    for table, key in CRIO_COMPARED_KEYS:
        if (table, key) in cfg.values:
            on_disk, where = cfg.values[(table, key)]
        elif key == "cgroup_manager":
            on_disk, where = cfg.get(table, key)
        else:
            continue
        if on_disk in ("", None):
            continue
        live = dig(running, *table.split("."), key)
        if live is not None and not _same(on_disk, live):
            diffs.append(f"{key}: file says {on_disk!r} ({where}), running CRI-O uses {live!r}")
    file_rts, where = cfg.values.get(("crio.runtime", "runtimes"), ({}, ""))
    live_rts = dig(running, "crio", "runtime", "runtimes")
    if isinstance(file_rts, dict) and isinstance(live_rts, dict):
        for name in sorted(set(file_rts) - set(live_rts)):
            diffs.append(f"runtimes: [crio.runtime.runtimes.{name}] is in the files, not in running CRI-O")
        for name in sorted(set(live_rts) - set(file_rts) - CRIO_BUILTIN_RUNTIMES):
            diffs.append(f"runtimes: running CRI-O has [crio.runtime.runtimes.{name}], no file defines it")
        for name in sorted(set(file_rts) & set(live_rts)):
            path = (file_rts[name] or {}).get("runtime_path") if isinstance(file_rts[name], dict) else None
            live = (live_rts[name] or {}).get("runtime_path") if isinstance(live_rts[name], dict) else None
            if path and live is not None and not _same(path, live):
                diffs.append(f"runtimes.{name}.runtime_path: file says {path!r}, running CRI-O uses {live!r}")
    return diffs


@check("crio.config.drift", Severity.WARNING, requires=(RUNS_CRIO,))
def crio_drift(ctx):
    """CRI-O runs with a config other than the one on disk."""
    cfg = ctx.crio
    if not cfg.exists:
        return skipped("no CRI-O config files")
    proc = ctx.process("crio")
    sock = crio_api_socket(cfg)
    running, why_not = ctx.crio_running
    if proc is None and running is None:
        return skipped(f"no crio process visible under /proc, and {why_not}")
    newer = _newer_files(ctx, cfg.files, proc)
    diffs = _crio_differences(cfg, running) if running is not None and not cfg.errors else []
    basis = [b for b, ok in (("file times against the process start", proc is not None),
                             (f"the running config from GET /config on {sock}", running is not None)) if ok]
    notes = [] if running is not None else [f"{why_not}: compared file times only"]
    if running is not None and cfg.errors:
        notes.append("a config file does not parse (see crio.config.parse): settings not compared")
    if not newer and not diffs:
        return passed("CRI-O runs the config on disk", seen="\n".join(["compared " + " and ".join(basis)] + notes))
    return warned(
        "CRI-O runs a different config than the one on disk", seen="\n".join(diffs + newer + notes),
        why="Most crio.conf settings take effect only when CRI-O restarts (a few reload on SIGHUP): the "
        "change is not active yet, the most common reason a fix \"did not work\", and it will become "
        "active, maybe unexpectedly, at the next restart or reboot.",
        fix="crio config | less   # the config CRI-O would load now: check it before restarting\n"
        + RESTART_FIX.format(command="systemctl restart crio"),
        refs=["https://github.com/cri-o/cri-o/blob/main/docs/crio.conf.5.md"])
