"""The pod network's configuration: without a loadable CNI config the runtime
reports NetworkReady=false and no pod (but host-network ones) starts."""
from __future__ import annotations

import os

from cri_exporter.doctor.facts import cni as cni_facts
from cri_exporter.doctor.model import Severity, failed, passed, skipped, warned
from cri_exporter.doctor.registry import check

REF = "https://www.cni.dev/docs/spec/#network-configuration-lists"
REF_K8S = "https://kubernetes.io/docs/concepts/extend-kubernetes/compute-storage-net/network-plugins/"


def cni_dirs(ctx) -> tuple[str, list[str], str] | None:
    """(conf_dir, bin_dirs, where they come from) for this node's runtime."""
    if ctx.runtime_kind == "containerd":
        cfg = ctx.containerd
        return cfg.cni_conf_dir(), cfg.cni_bin_dirs(), "containerd config"
    if ctx.runtime_kind == "crio":
        conf, _ = ctx.crio.get("crio.network", "network_dir")
        bins, _ = ctx.crio.get("crio.network", "plugin_dirs")
        return str(conf).rstrip("/") or "/etc/cni/net.d", [str(b).rstrip("/") for b in (bins or [])], "CRI-O config"
    return None


def _load(ctx):
    if "cni" not in ctx.__dict__:
        dirs = cni_dirs(ctx)
        ctx.__dict__["cni"] = None if dirs is None else (cni_facts.load(ctx.hostfs, dirs[0], dirs[1]), dirs[2])
    return ctx.__dict__["cni"]


@check("cni.config", Severity.CRITICAL)
def config(ctx):
    """The CNI directory must hold a valid config; the first in lexical order wins."""
    loaded = _load(ctx)
    if loaded is None:
        return skipped("no container runtime found to read the CNI directory from")
    cfg, where = loaded
    chosen = cfg.chosen
    listing = "\n".join(f"{f.path}: {f.error or 'ok'}" for f in cfg.files) or f"{cfg.conf_dir}: no *.conf/*.conflist/*.json"
    if chosen is None:
        return failed(
            f"no valid CNI config in {cfg.conf_dir}", f"conf_dir {cfg.conf_dir} ({where})\n{listing}",
            "The runtime reports NetworkReady=false (\"cni plugin not initialized\"/\"no network config "
            "found\") and every pod stays in ContainerCreating.",
            "Install the cluster's network add-on (it writes the config), e.g.\n"
            "kubectl apply -f <your CNI's manifest>\nor fix the file named above.",
            [REF_K8S, REF])
    before = [f for f in cfg.files[: cfg.files.index(chosen)] if f.error]
    valid = [f for f in cfg.files if not f.error]
    if before and ctx.runtime_kind == "containerd":
        return failed(
            f"{before[0].path} sorts before {chosen.path} and is invalid", listing,
            "containerd's CNI loader stops at the first file it cannot load, so the network stays "
            "not ready although a valid config exists.",
            f"Remove or fix {before[0].path}.", [REF])
    if len(valid) > 1:
        return warned(
            f"{len(valid)} CNI configs compete; {os.path.basename(chosen.path)} wins (sorts first)", listing,
            "Only the first file in lexical order is used; a leftover from a previous network add-on "
            "(e.g. 10-flannel.conflist before 10-calico.conflist) silently takes over pod networking.",
            "Move the configs of add-ons you no longer run out of " + cfg.conf_dir + ", then restart the runtime.",
            [REF])
    return passed(f"{chosen.path} ({chosen.name})", listing)


@check("cni.plugins", Severity.CRITICAL)
def plugins(ctx):
    """Every plugin `type` in the chosen config must be an executable in the bin dirs."""
    loaded = _load(ctx)
    if loaded is None or loaded[0].chosen is None:
        return skipped("no valid CNI config (see cni.config)")
    cfg, _ = loaded
    chosen = cfg.chosen
    missing, found = [], []
    for p in chosen.plugins:
        t = str(p.get("type"))
        hits = [os.path.join(d, t) for d in cfg.bin_dirs if ctx.hostfs.is_executable(os.path.join(d, t))]
        (found if hits else missing).append(t)
    seen = f"{chosen.path} needs {', '.join(str(p.get('type')) for p in chosen.plugins)}; bin dirs: {', '.join(cfg.bin_dirs)}"
    if not missing:
        return passed(f"all {len(found)} plugins found", seen)
    return failed(
        f"CNI plugins missing: {', '.join(missing)}", seen,
        "Pod sandbox creation fails with \"failed to find plugin ... in path\".",
        "Install the reference plugins (Debian: apt-get install containernetworking-plugins; or the "
        "cni-plugins release tarball into /opt/cni/bin), or point bin_dir at where they are.",
        ["https://github.com/containernetworking/plugins", REF_K8S])
