"""kube-proxy's proxy mode on this node, read the way kube-proxy settles it.

kube-proxy (cmd/kube-proxy/app/options.go, Options.Complete, 1.29-1.36):
with `--config`, the KubeProxyConfiguration file *replaces* what the flags
said (only the logging flags are copied over), so `--proxy-mode` counts only
without `--config`; then platformApplyDefaults (server_linux.go) turns an
empty mode into "iptables" on Linux.

kubeadm runs kube-proxy as a DaemonSet: `--config=/var/lib/kube-proxy/config.conf`
is a path in the container's filesystem, read here through
/proc/<pid>/root (which needs ptrace rights over the process), every link
resolved inside that root. k3s runs kube-proxy inside its own process
unless `disable-kube-proxy` is set, with `proxy-mode=iptables`
(pkg/daemons/agent/agent_linux.go, kubeProxyArgs) unless a `kube-proxy-arg`
says otherwise.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import yaml

from cri_exporter.doctor.facts import k3s, procfs, systemd
from cri_exporter.doctor.facts.files import FileTooLarge, list_dir, read_config
from cri_exporter.hostfs import HostFS

# Modes kube-proxy accepts on Linux (pkg/proxy/apis/config: ProxyMode).
LINUX_MODES = ("iptables", "ipvs", "nftables")
DEFAULT_MODE = "iptables"  # platformApplyDefaults, an empty mode on Linux


@dataclass(frozen=True)
class ProxyMode:
    # "running": a kube-proxy runs and `mode` says in which mode;
    # "absent": no kube-proxy on this node (replaced by the CNI, or none yet);
    # "unknown": there may be one, but its mode could not be learned.
    state: str
    mode: str | None
    seen: str  # how it was learned, or why not

    def __str__(self) -> str:
        return self.seen


def _flag(args: list[str], name: str) -> str | None:
    """The last value of `--name=v` / `--name v` / `-name v` (pflag's forms)."""
    value = None
    for i, a in enumerate(args):
        bare = a.lstrip("-")
        if not a.startswith("-"):
            continue
        if bare.startswith(name + "="):
            value = bare.split("=", 1)[1]
        elif bare == name and i + 1 < len(args):
            value = args[i + 1]
    return value


def _read_in_process_root(hostfs: HostFS, pid: int, path: str) -> str:
    """A file as the process sees it: its root is /proc/<pid>/root, and every
    link in `path` is resolved inside that root (never in the doctor's own)."""
    if not os.path.isabs(path):
        path = "/" + path  # kube-proxy's working directory in its image is /
    return read_config(HostFS(os.path.join(hostfs.path(f"/proc/{pid}"), "root")), path)


def _from_process(hostfs: HostFS, proc: procfs.Process) -> ProxyMode:
    args = list(proc.args[1:])
    config = _flag(args, "config")
    who = f"kube-proxy (pid {proc.pid})"
    if config:
        try:
            data = yaml.safe_load(_read_in_process_root(hostfs, proc.pid, config))
        except (OSError, FileTooLarge) as e:
            why = getattr(e, "strerror", None) or str(e)
            return ProxyMode("unknown", None, f"{who} reads its mode from --config={config}, which could not be "
                             f"read through /proc/{proc.pid}/root ({why}; reading another process's files needs "
                             "ptrace rights over it)")
        except yaml.YAMLError as e:
            return ProxyMode("unknown", None, f"{who}: --config={config} is not YAML ({str(e).splitlines()[0]})")
        mode = data.get("mode") if isinstance(data, dict) else None
        mode = "" if mode is None else str(mode)
        where = f"mode: {mode!r} in --config={config} (read through /proc/{proc.pid}/root; the file replaces the flags)"
    else:
        flag = _flag(args, "proxy-mode")
        mode = flag or ""
        where = f"--proxy-mode={flag}" if flag is not None else "no --proxy-mode and no --config"
    return _settled(mode, f"{who}: {where}")


def _settled(mode: str, where: str) -> ProxyMode:
    if mode == "":
        return ProxyMode("running", DEFAULT_MODE, f"{where}; empty means {DEFAULT_MODE} on Linux "
                         "(platformApplyDefaults)")
    if mode.lower() in LINUX_MODES:
        return ProxyMode("running", mode.lower(), where)
    return ProxyMode("unknown", None, f"{where}: not a mode kube-proxy runs on Linux")


def _k3s_embedded(hostfs: HostFS) -> ProxyMode | None:
    """k3s's in-process kube-proxy, when this is a k3s node."""
    unit = next((u for u in (systemd.read_unit(hostfs, n) for n in k3s.UNITS) if u.exists), None)
    if unit is None and not hostfs.is_dir(f"{k3s.DATA_DIR}/agent"):
        return None
    keys, files = k3s.config_keys(hostfs)
    argv = (systemd.exec_start(hostfs, unit) or []) if unit else []
    where = ", ".join(files + ([unit.files[0]] if unit and unit.files else [])) or k3s.DATA_DIR
    disabled = [v.lower() for v in keys.get("disable-kube-proxy", ([], ""))[0]]
    if "--disable-kube-proxy" in argv or "--disable-kube-proxy=true" in argv or "true" in disabled:
        return ProxyMode("absent", None, f"k3s runs no kube-proxy here (disable-kube-proxy in {where})")
    proxy_args = keys.get("kube-proxy-arg", ([], ""))[0] + [
        argv[i + 1] if a == "--kube-proxy-arg" and i + 1 < len(argv) else a.partition("=")[2]
        for i, a in enumerate(argv) if a == "--kube-proxy-arg" or a.startswith("--kube-proxy-arg=")]
    mode = None
    for a in proxy_args:
        name, _, value = a.lstrip("-").partition("=")
        if name == "proxy-mode":
            mode = value
    if mode is None:
        return ProxyMode("running", DEFAULT_MODE, f"k3s runs kube-proxy in its own process ({where}) with "
                         f"proxy-mode={DEFAULT_MODE}, its default (no kube-proxy-arg proxy-mode)")
    return _settled(mode, f"k3s runs kube-proxy in its own process: kube-proxy-arg proxy-mode={mode} ({where})")


def read(hostfs: HostFS) -> ProxyMode:
    if not any(e.isdigit() for e in list_dir(hostfs, "/proc")):
        return ProxyMode("unknown", None, "no process is visible under /proc (not mounted, or hidden from the "
                         "doctor): whether kube-proxy runs, and in which mode, is unknown")
    procs = [p for p in procfs.find_processes(hostfs, ("kube-proxy",)) if p.args]
    if procs:
        return _from_process(hostfs, procs[0])
    embedded = _k3s_embedded(hostfs)
    if embedded is not None:
        return embedded
    return ProxyMode("absent", None, "no kube-proxy process runs (Services handled by the CNI, e.g. Cilium's or "
                     "kube-router's kube-proxy replacement, or kube-proxy not started yet)")
