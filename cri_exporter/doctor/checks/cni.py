"""The pod network's configuration: without a loadable CNI config the runtime
reports NetworkReady=false and no pod (but host-network ones) starts."""
from __future__ import annotations

import os

from cri_exporter.doctor.facts import cni as cni_facts
from cri_exporter.doctor.model import Severity, failed, passed, warned
from cri_exporter.doctor.registry import check
from cri_exporter.doctor.requirements import CNI_CONFIG, CNI_DIRECTORY

REF = "https://www.cni.dev/docs/spec/#network-configuration-lists"
REF_CNI_EXEC = "https://www.cni.dev/docs/spec/#section-4-plugin-delegation"
REF_K8S = "https://kubernetes.io/docs/concepts/extend-kubernetes/compute-storage-net/network-plugins/"


@check("cni.config", Severity.CRITICAL, requires=(CNI_DIRECTORY,))
def config(ctx):
    """The CNI directory must hold a valid config; the first in lexical order wins."""
    cfg = ctx.cni
    where = cfg.where
    chosen = cfg.chosen
    listing = "\n".join(f"{f.path}: {f.error or 'ok'}" for f in cfg.files) or f"{cfg.conf_dir}: no *.conf/*.conflist/*.json"
    if chosen is None:
        return failed(
            f"no valid CNI config in {cfg.conf_dir}", seen=f"conf_dir {cfg.conf_dir} ({where})\n{listing}",
            why="The runtime reports NetworkReady=false (\"cni plugin not initialized\"/\"no network config "
            "found\") and every pod stays in ContainerCreating.",
            fix="Install the cluster's network add-on (it writes the config), e.g.\n"
            "kubectl apply -f <your CNI's manifest>\nor fix the file named above.",
            refs=[REF_K8S, REF])
    before = [f for f in cfg.files[: cfg.files.index(chosen)] if f.error]
    valid = [f for f in cfg.files if not f.error]
    if before and ctx.runtime_kind == "containerd":
        return failed(
            f"{before[0].path} sorts before {chosen.path} and is invalid", seen=listing,
            why="containerd's CNI loader stops at the first file it cannot load, so the network stays "
            "not ready although a valid config exists.",
            fix=f"Remove or fix {before[0].path}.", refs=[REF])
    if len(valid) > 1:
        return warned(
            f"{len(valid)} CNI configs compete; {os.path.basename(chosen.path)} wins (sorts first)", seen=listing,
            why="Only the first file in lexical order is used; a leftover from a previous network add-on "
            "(e.g. 10-flannel.conflist before 10-calico.conflist) silently takes over pod networking.",
            fix="Move the configs of add-ons you no longer run out of " + cfg.conf_dir + ", then restart the runtime.",
            refs=[REF])
    return passed(f"{chosen.path} ({chosen.name})", seen=listing)


@check("cni.plugins", Severity.CRITICAL, requires=(CNI_CONFIG,))
def plugins(ctx):
    """Every binary the chosen config executes (each plugin's `type`, its
    `ipam.type`, flannel's delegate) must be an executable in the bin dirs;
    links are followed inside the host root."""
    cfg = ctx.cni
    chosen = cfg.chosen
    needed = cni_facts.binaries(chosen)
    missing = [(b, why) for b, why in needed
               if not any(ctx.hostfs.is_executable(os.path.join(d, b)) for d in cfg.bin_dirs)]
    seen = (f"{chosen.path} executes " + ", ".join(b if why == "plugin" else f"{b} ({why})" for b, why in needed)
            + f"; bin dirs: {', '.join(cfg.bin_dirs)} ({cfg.where})")
    if not missing:
        return passed(f"all {len(needed)} CNI binaries found", seen=seen)
    return failed(
        f"CNI plugins missing: {', '.join(b for b, _ in missing)}", seen=seen,
        why="Pod sandbox creation fails with \"failed to find plugin ... in path\".",
        fix="Install the reference plugins (Debian: apt-get install containernetworking-plugins; or the "
        "cni-plugins release tarball into /opt/cni/bin), or point bin_dir at where they are.",
        refs=["https://github.com/containernetworking/plugins", REF_K8S, REF_CNI_EXEC])
