"""`doctor --bundle FILE.tar.gz`: everything a maintainer asks for first, in
one file that is safe to attach to a ticket.

Every text that enters the archive goes through cri_exporter.redact, the
findings and the runtime's Status verbose info (containerd puts its registry
credentials there) included. The config files are exactly those the checks
read (HostFS.recorded), read again through the same confined HostFS; key,
certificate and kubeconfig files are never included. What cannot be taken
(unreadable, too large, past the bundle's total cap) is listed with the
reason in files.txt.
"""
from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import posixpath
import stat
import tarfile
import time

from cri_exporter.cri.client import CriError
from cri_exporter.doctor.facts import procfs
from cri_exporter.doctor.facts.files import MAX_CONFIG_BYTES
from cri_exporter.doctor.report import render_json, render_text
from cri_exporter.redact import redact_data, redact_text

NEVER = (".key", ".pem", ".crt", ".cert", ".p12", ".pfx", ".der", ".csr", "kubeconfig", ".conf.kubeconfig")
NEVER_NAMES = ("kubelet.conf", "bootstrap-kubelet.conf", "admin.conf", "config.json", ".dockercfg")
# All config files together; one of them may be MAX_CONFIG_BYTES (1 MiB).
MAX_FILES_BYTES = 8 << 20
SYSCTLS = ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
           "net.netfilter.nf_conntrack_count", "net.netfilter.nf_conntrack_max", "fs.inotify.max_user_instances",
           "fs.inotify.max_user_watches", "kernel.pid_max", "vm.overcommit_memory", "vm.panic_on_oom")
MODULES = ("br_netfilter", "overlay", "nf_conntrack", "ip_vs", "ip_tables", "nf_tables", "vxlan")


def _allowed(path: str) -> bool:
    name = os.path.basename(path).lower()
    return not name.endswith(NEVER) and name not in NEVER_NAMES and "kubeconfig" not in name


def member_name(host_path: str) -> str:
    """A tar member name for a host path that cannot leave the extraction
    directory (no `..`, no absolute path) and is valid UTF-8 whatever bytes
    the file's name had."""
    clean = posixpath.normpath("/" + host_path).lstrip("/")
    text = os.fsencode(clean).decode("utf-8", errors="backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _jsonable(value):
    if isinstance(value, CriError):
        return {"error": str(value), "code": value.code}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
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


def _config_files(ctx) -> tuple[dict[str, bytes], list[str]]:
    """The files the checks read, redacted, and one line per file for files.txt."""
    members: dict[str, bytes] = {}
    listing: list[str] = []
    total = 0
    for path in ctx.hostfs.recorded:
        name = member_name(path)
        if not _allowed(path):
            listing.append(f"/{name}: not included (key, certificate or kubeconfig file)")
            continue
        try:
            data = ctx.hostfs.read_bytes(path, MAX_CONFIG_BYTES + 1)
        except OSError as e:
            if e.errno != errno.ENOENT:
                listing.append(f"/{name}: not included ({e.strerror or e})")
            continue
        if len(data) > MAX_CONFIG_BYTES:
            listing.append(f"/{name}: not included (larger than {MAX_CONFIG_BYTES} bytes)")
            continue
        if total + len(data) > MAX_FILES_BYTES:
            listing.append(f"/{name}: not included (the bundle's {MAX_FILES_BYTES} bytes of files are used up)")
            continue
        total += len(data)
        members[f"files/{name}"] = redact_text(data.decode("utf-8", errors="replace")).encode()
        listing.append(f"/{name}: {len(data)} bytes")
    return members, listing


def build(report, ctx) -> dict[str, bytes]:
    """Archive member name -> content, all redacted."""
    def as_json(value) -> bytes:
        return json.dumps(redact_data(value), indent=2, default=str, sort_keys=True).encode() + b"\n"

    files, listing = _config_files(ctx)
    return {
        "README.txt": (b"cri-exporter doctor support bundle\n"
                       b"Secrets (registry credentials, auth headers, tokens, keys, URL passwords) are replaced\n"
                       b"by REDACTED; key, certificate and kubeconfig files are never included. files/ holds the\n"
                       b"config files the checks read; files.txt lists them and any that could not be taken.\n"),
        "findings.json": render_json(report).encode(),
        "findings.txt": render_text(report).encode(),
        "runtime.json": as_json(_runtime(ctx)),
        "facts.json": as_json(_facts(ctx)),
        "files.txt": ("\n".join(listing) + "\n").encode(),
        **files,
    }


class BundleOutput:
    """The bundle's file, opened (made if absent) before the doctor confines
    itself (confine_doctor.py) and written through that descriptor after the
    run: the confined doctor holds no right to make, rename or remove any file,
    the bundle's directory included. So it is written in place, not renamed
    over: a failed write leaves the file empty, never half a bundle.

    Raises OSError: the directory does not exist or cannot be written, the path
    is a directory, a symbolic link (not followed: an operator's /tmp is
    shared) or not a regular file."""

    def __init__(self, path: str):
        self.path = path
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO must not block the run
        try:
            self.fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666)
            self.created = True
        except FileExistsError:
            try:
                self.fd = os.open(path, flags)
            except OSError as err:
                if err.errno == errno.ELOOP:
                    raise OSError(err.errno, "it is a symbolic link (not followed)") from None
                if err.errno == errno.ENXIO:  # a FIFO or socket with no reader
                    raise OSError(errno.EINVAL, "not a regular file") from None
                raise
            self.created = False
        if not stat.S_ISREG(os.fstat(self.fd).st_mode):
            os.close(self.fd)
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(self.fd, True)
        self.started = False  # an earlier bundle at the path is kept until this one is written

    def write(self, members: dict[str, bytes]) -> None:
        now = time.time()
        self.started = True
        try:
            os.ftruncate(self.fd, 0)
            with os.fdopen(self.fd, "wb", closefd=False) as raw:
                with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
                    for name, data in members.items():
                        info = tarfile.TarInfo(f"cri-doctor-bundle/{name}")
                        info.size, info.mtime, info.mode = len(data), now, 0o644
                        tar.addfile(info, io.BytesIO(data))
            os.fsync(self.fd)
        except OSError:
            self.discard()
            raise

    def discard(self) -> None:
        """Leave no partial bundle: empty it, and remove it if this run made it
        and may (unconfined); confined, an empty file stays. A file that was
        there before and that no write began on is left as it was."""
        if self.started or self.created:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
        if self.created:
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def write_bundle(path: str, report, ctx) -> None:
    out = BundleOutput(path)
    try:
        out.write(build(report, ctx))
    finally:
        out.close()
