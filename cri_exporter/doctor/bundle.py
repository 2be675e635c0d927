"""`doctor --bundle FILE.tar.gz`: everything a maintainer asks for first, in
one file that is safe to attach to a ticket.

Every text that enters the archive goes through redact.py, including the
findings (they quote config values) and the runtime's Status verbose info
(containerd puts its registry credentials there). Key and certificate files
and kubeconfigs are never included at all.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import tarfile
import time

from cri_exporter.cri.client import CriError
from cri_exporter.doctor.facts import procfs
from cri_exporter.doctor.facts.files import MAX_CONFIG_BYTES, list_dir
from cri_exporter.doctor.redact import redact_data, redact_text
from cri_exporter.doctor.report import render_text

NEVER = (".key", ".pem", ".crt", ".cert", ".p12", ".pfx", ".der", ".csr", "kubeconfig", ".conf.kubeconfig")
NEVER_NAMES = ("kubelet.conf", "bootstrap-kubelet.conf", "admin.conf", "config.json", ".dockercfg")
SYSCTLS = ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
           "net.netfilter.nf_conntrack_count", "net.netfilter.nf_conntrack_max", "fs.inotify.max_user_instances",
           "fs.inotify.max_user_watches", "kernel.pid_max", "vm.overcommit_memory", "vm.panic_on_oom")
MODULES = ("br_netfilter", "overlay", "nf_conntrack", "ip_vs", "ip_tables", "nf_tables", "vxlan")


def _allowed(path: str) -> bool:
    name = os.path.basename(path).lower()
    return not name.endswith(NEVER) and name not in NEVER_NAMES and "kubeconfig" not in name


def config_files(ctx) -> list[str]:
    """Host paths of the config files worth reading, existing ones only."""
    files: list[str] = []
    if not ctx.containerd.errors or ctx.containerd.exists:
        files += ctx.containerd.files
    config_path = ctx.containerd.registry().get("config_path") if not ctx.containerd.errors else None
    if config_path:
        files += [f"{config_path}/{d}/hosts.toml" for d in list_dir(ctx.hostfs, config_path)]
    files += ctx.crio.files + ctx.kubelet.files + ["/etc/crictl.yaml"]
    from cri_exporter.doctor.checks.cni import cni_dirs
    from cri_exporter.doctor.checks.containerd import UNIT_PATHS

    dirs = cni_dirs(ctx)
    conf_dir = dirs[0] if dirs else "/etc/cni/net.d"
    files += [f"{conf_dir}/{n}" for n in list_dir(ctx.hostfs, conf_dir)]
    files += list(UNIT_PATHS) + [f"/etc/systemd/system/containerd.service.d/{n}"
                                 for n in list_dir(ctx.hostfs, "/etc/systemd/system/containerd.service.d")]
    seen, out = set(), []
    for f in files:
        local = ctx.hostfs.path(f)
        if f in seen or not _allowed(f) or not os.path.isfile(local):
            continue
        seen.add(f)
        out.append(f)
    return out


def _jsonable(value):
    if isinstance(value, CriError):
        return {"error": str(value), "code": value.code}
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _runtime(ctx) -> dict[str, object]:
    out: dict[str, object] = {"endpoint": ctx.endpoint}
    for call in ("version", "status", "image_fs_info"):
        out[call] = _jsonable(ctx.cri(call))
    status = out.get("status")
    if isinstance(status, dict) and isinstance(status.get("info"), dict):
        # containerd's info values are JSON documents (config, cniconfig...): decode them so keys can be redacted.
        decoded = {}
        for k, v in status["info"].items():
            try:
                decoded[k] = json.loads(v)
            except (TypeError, ValueError):
                decoded[k] = v
        status["info"] = decoded
    pods, containers = ctx.cri("list_pod_sandboxes"), ctx.cri("list_containers")
    summary: dict[str, object] = {}
    if isinstance(pods, CriError):
        summary["pods"] = _jsonable(pods)
    else:
        summary["pods"] = {"total": len(pods), "by_state": _count(p.state for p in pods),
                           "items": [{"id": p.id[:13], "namespace": p.k8s_namespace, "name": p.k8s_name,
                                      "state": p.state, "runtime_handler": p.runtime_handler} for p in pods]}
    if isinstance(containers, CriError):
        summary["containers"] = _jsonable(containers)
    else:
        summary["containers"] = {"total": len(containers), "by_state": _count(c.state for c in containers),
                                 "items": [{"id": c.id[:13], "pod": c.pod_sandbox_id[:13], "name": c.k8s_name,
                                            "image": c.image, "state": c.state, "attempt": c.attempt}
                                           for c in containers]}
    out["summary"] = summary
    return out


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def _facts(ctx) -> dict[str, object]:
    h = ctx.hostfs
    net = ctx.network
    return {
        "kernel": {
            "release": procfs.sysctl(h, "kernel.osrelease"),
            "sysctls": {name: procfs.sysctl(h, name) for name in SYSCTLS},
            "modules": {name: procfs.module_state(h, name) for name in MODULES},
            "swaps": procfs.swaps(h),
            "meminfo": {k: v for k, v in procfs.meminfo(h).items() if k in ("MemTotal", "MemAvailable", "SwapTotal")},
        },
        "cgroup": dataclasses.asdict(ctx.cgroups) | {"controllers": sorted(ctx.cgroups.controllers)},
        "runtime_processes": [dataclasses.asdict(p) for p in ctx.runtime_processes],
        "network": {"error": str(net)} if isinstance(net, Exception) else dataclasses.asdict(net),
    }


def build(report, ctx) -> dict[str, bytes]:
    """Archive member name -> content, all redacted."""
    def as_json(value) -> bytes:
        return redact_text(json.dumps(redact_data(value), indent=2, default=str, sort_keys=True)).encode() + b"\n"

    members: dict[str, bytes] = {
        "README.txt": (b"cri-exporter doctor support bundle\n"
                       b"Secrets (registry credentials, Authorization headers, tokens, private keys) are\n"
                       b"replaced by REDACTED; key, certificate and kubeconfig files are never included.\n"),
        "findings.json": as_json(report.to_dict()),
        "findings.txt": redact_text(render_text(report)).encode(),
        "runtime.json": as_json(_runtime(ctx)),
        "facts.json": as_json(_facts(ctx)),
    }
    for f in config_files(ctx):
        try:
            with open(ctx.hostfs.path(f), "rb") as fh:
                data = fh.read(MAX_CONFIG_BYTES + 1)
        except OSError as e:
            members[f"files{f}.error"] = str(e).encode()
            continue
        if len(data) > MAX_CONFIG_BYTES:
            members[f"files{f}.error"] = b"larger than 1 MiB: not included\n"
            continue
        members[f"files{f}"] = redact_text(data.decode("utf-8", errors="replace")).encode()
    return members


def write_bundle(path: str, report, ctx) -> None:
    members = build(report, ctx)
    now = time.time()
    tmp = f"{path}.tmp-{os.getpid()}"
    with tarfile.open(tmp, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"cri-doctor-bundle/{name}")
            info.size, info.mtime, info.mode = len(data), now, 0o644
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)
