"""Kernel-enforced least privilege for `serve` (Landlock; confine_landlock.py),
and the policy the hand-run doctor builds on (confine_doctor.py).

HostFS keeps the agent's own reads inside --host-root, but uid 0 can still
open every pod's service-account token, the kubelet's client key and the
control plane's keys: a bug (a path taken from a config, a finding quoting
a file) would leak them. Code run inside the agent would still hold the CRI
socket; this guards against the agent's mistakes, not its owner. At start, before any
thread exists (Landlock restricts the calling thread and what it starts
afterwards, so grpc's threads must come later), serve restricts itself:

- **Nothing is written, made, removed, renamed or truncated** anywhere but
  /dev/null (the doctor child's stdin); cgroup files may be "truncated",
  which their filesystem ignores (no byte changes, at most their mtime):
  granting it lets each open's check stop at the cgroup mount or the pod
  root instead of walking up to / (confine_cgroupfs.py). TCP: bind only on the listen port
  (ABI 4+; connect is left open: the doctor asks the kubelet's healthz on
  whatever port its config names). No signal to, nor abstract socket of, a process
  outside the domain (ABI 6+). The doctor child inherits all of it.
- **Read** (files and directories): the interpreter, its libraries and the
  package (sys.prefix, sys.base_prefix, sys.path, /usr/lib, /lib*, ...),
  /etc (resolver, TLS, time zone), the process's own /proc and /sys, the web
  config and the TLS files it names (their directories: a secret volume
  swaps them by renaming), and **the host root, except SECRETS**: beneath
  those only directories can be listed and entries stat'ed (READ_DIR), no
  file opened. The ephemeral-storage walker needs no more under pods' volumes
  (it lists, lstats, and asks project quotas by ioctl on a directory fd).
- **Execute**: the interpreter and its libraries (the doctor child).

Landlock has no deny rule, so "the host root except E" is built at start: a
directory with no excluded path beneath gets one rule for the whole tree; one
with some is split: it gets READ_DIR alone, and each of its entries (symlinks
skipped: their targets are reached by their own paths) is handled the same
way. **A file or directory created after start directly inside a split
directory** (/, /etc, /var, /var/lib, /var/lib/kubelet, /etc/kubernetes,
/dev...) **can be listed and stat'ed but not read** until serve restarts;
beneath an unsplit directory, new files are read as before.

What Landlock also takes away, whatever the rules: ptrace-like access to
processes outside the domain (/proc/<pid>/fd/N links, exe, cwd, root, environ,
io, ns/*). The DaemonSet and the systemd unit run with no capability, where
those were denied already (container_fds.py: sockets are absent there), so in
those deployments nothing changes; run as full root (a lab), serve then sees
what it sees deployed.
"""
from __future__ import annotations

import errno
import fnmatch
import glob
import os
import site
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog

from cri_exporter import confine_cgroupfs
from cri_exporter import confine_landlock as ll
from cri_exporter import confined_read

log = structlog.get_logger(__name__)

# Host paths (fnmatch per component) beneath which nothing is read, only listed
# and stat'ed. Applied under --host-root and under the process's own /.
SECRETS = (
    # every pod's volumes: service-account tokens, secrets, configmaps, emptyDirs
    "var/lib/kubelet/pods",
    # the kubelet's client and serving keys (kubelet-*.pem holds cert and key), its kubeconfigs
    "var/lib/kubelet/pki/*.key", "var/lib/kubelet/pki/*.pem", "var/lib/kubelet/kubeconfig",
    "var/lib/kubelet/bootstrap-kubeconfig",
    # kubeadm: the cluster CA's, service-account and etcd keys (their certificates stay readable:
    # the doctor checks the CA's expiry), the admin/controller/kubelet kubeconfigs
    "etc/kubernetes/pki/*.key", "etc/kubernetes/pki/*/*.key", "etc/kubernetes/*.conf", "var/lib/etcd",
    # k3s / RKE2: the server's TLS, tokens, datastore, and the agents' keys and kubeconfigs
    "var/lib/rancher/*/server", "var/lib/rancher/*/agent/*.key", "var/lib/rancher/*/agent/*.kubeconfig",
    "etc/rancher/*/*.yaml.kubeconfig", "etc/rancher/k3s/k3s.yaml", "etc/rancher/rke2/rke2.yaml",
    # the host's accounts, SSH host keys, people's files, any secrets mount
    "etc/shadow", "etc/shadow-", "etc/gshadow", "etc/gshadow-", "etc/ssh/*_key", "root", "home",
    "run/secrets", "var/run/secrets",
    # raw devices (a disk read as a file bypasses everything); /dev/kmsg is allowed back below
    "dev",
)
# Allowed back beneath SECRETS (host paths): the doctor's kernel log.
HOST_EXTRA_READ = ("/dev/kmsg",)

# The process's own paths read, beside the package's (sys.prefix and sys.path).
OWN_READ = ("/etc", "/proc", "/sys", "/usr/share/zoneinfo", "/usr/share/ca-certificates")
OWN_EXEC = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/usr/bin", "/usr/local/bin", "/bin")
OWN_DEVICES = (("/dev/null", ll.READ_FILE | ll.WRITE_FILE), ("/dev/urandom", ll.READ_FILE),
               ("/dev/random", ll.READ_FILE))

# What the ruleset handles: every filesystem right (cut to the kernel's ABI).
HANDLED_FS = ll.FS_ALL
# Below this ABI, truncate(2) is not controlled: writes are not all denied.
FULL_ABI = 3

ENFORCED, PARTIAL, UNAVAILABLE, DISABLED = "enforced", "partial", "unavailable", "disabled"


@dataclass
class Confinement:
    """What applying the policy came to; exported as cri_exporter_confinement_info."""

    state: str
    abi: int = 0
    rules: int = 0
    seconds: float = 0.0
    reason: str = ""
    limits: list[str] = field(default_factory=list)


@dataclass
class Policy:
    """Paths and rights, before expansion: (path, rights) grants, each cut by the exclusions."""

    grants: list[tuple[str, int]] = field(default_factory=list)
    own: list[tuple[str, int]] = field(default_factory=list)  # cut only by exclusions beneath them
    exact: list[tuple[str, int]] = field(default_factory=list)  # never cut (allowed back)
    excluded: list[tuple[str, ...]] = field(default_factory=list)  # absolute patterns, by component
    bind_ports: list[int] = field(default_factory=list)

    def exclude(self, root: str, pattern: str) -> None:
        parts = tuple(p for p in os.path.join(os.path.abspath(root), pattern).split("/") if p)
        if parts not in self.excluded:
            self.excluded.append(parts)

    def rules(self) -> list[tuple[str, int]]:
        """Every (path, rights) rule: grants expanded around the exclusions, then the exact ones."""
        out: dict[str, int] = {}
        for path, rights in self.grants:
            for p, r in _expand(os.path.abspath(path), rights, self.excluded):
                out[p] = out.get(p, 0) | r
        for path, rights in self.own:
            path = os.path.abspath(path)
            beneath = [pat for pat in self.excluded if not matches_prefix(pat, path)]
            for p, r in _expand(path, rights, beneath):
                out[p] = out.get(p, 0) | r
        for path, rights in self.exact:
            out[path] = out.get(path, 0) | rights
        return list(out.items())


def matches_prefix(pattern: tuple[str, ...], path: str) -> bool:
    """The pattern names `path` or one of its ancestors."""
    parts = [p for p in path.split("/") if p]
    return len(pattern) <= len(parts) and all(fnmatch.fnmatchcase(parts[i], pattern[i]) for i in range(len(pattern)))


def _expand(path: str, rights: int, excluded: list[tuple[str, ...]]) -> Iterable[tuple[str, int]]:
    parts = tuple(p for p in path.split("/") if p)
    n = len(parts)
    under = False  # path itself is (beneath) an excluded one
    split = False  # some excluded path lies strictly beneath
    for pat in excluded:
        k = min(n, len(pat))
        if all(fnmatch.fnmatchcase(parts[i], pat[i]) for i in range(k)):
            if len(pat) <= n:
                under = True
            else:
                split = True
    try:
        is_dir = os.path.isdir(path) and not os.path.islink(path)
    except OSError:
        return
    if under:
        if is_dir and rights & ll.READ_DIR:
            yield path, ll.READ_DIR
        return
    if not is_dir:
        if os.path.exists(path):
            yield path, rights & ll.FILE_RIGHTS
        return
    if not split:
        yield path, rights
        return
    yield path, rights & ll.READ_DIR
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_symlink():
            continue
        yield from _expand(entry.path, rights, excluded)


def build_policy(host_root: str, *, read_files: Iterable[str] = (), listen_port: int | None = None,
                 secrets: Iterable[str] = SECRETS, host_reads: Iterable[str] = HOST_EXTRA_READ) -> Policy:
    """The serve policy for this host root; `read_files`: the web config and
    the files it names (their directories are allowed). `secrets` and
    `host_reads` (host paths allowed back beneath them, globs per component)
    let the hand-run doctor (confine_doctor.py) reuse it with a few more files."""
    p = Policy()
    host_root = os.path.realpath(host_root)  # rules hold inodes: a symlinked root is ruled at its target
    for root in {host_root, "/"}:
        for pattern in secrets:
            p.exclude(root, pattern)
    p.grants.append((host_root, ll.READ))
    # TRUNCATE too where the kernel ignores it (cgroupfs): each open's check stops there (confine_cgroupfs.py)
    for d in confine_cgroupfs.cgroup_dirs(host_root):
        p.grants.append((d, ll.READ | ll.TRUNCATE))
    for local in host_files(host_root, host_reads):
        p.exact.append((local, ll.READ_FILE))
    for path in _package_paths():  # the interpreter's own tree, even under /root (pyenv)
        p.own.append((path, ll.READ | ll.EXECUTE))
    for path in OWN_EXEC:
        p.grants.append((path, ll.READ | ll.EXECUTE))
    for path in OWN_READ:
        p.grants.append((path, ll.READ))
    exe = os.path.realpath(sys.executable)
    p.exact.append((exe, ll.READ_FILE | ll.EXECUTE))
    for dev, rights in OWN_DEVICES:
        if os.path.exists(dev):
            p.exact.append((dev, rights))
    for f in read_files:
        for d in {os.path.dirname(os.path.abspath(f)), os.path.dirname(os.path.realpath(f))}:
            if os.path.isdir(d):
                p.exact.append((d, ll.READ))
    if listen_port is not None:
        p.bind_ports.append(listen_port)
    return p


def host_files(host_root: str, patterns: Iterable[str]) -> list[str]:
    """The local paths of the existing non-directories matching host path
    globs, symlinks resolved inside the host root (a rule holds the target's
    inode: kubelet-client-current.pem links to a dated file)."""
    from cri_exporter.hostfs import HostFS

    hostfs = HostFS(host_root)
    out = []
    for pattern in patterns:
        for local in sorted(glob.glob(os.path.join(host_root, pattern.lstrip("/")))):
            host_path = "/" + os.path.relpath(local, host_root) if host_root != "/" else local
            try:
                target = hostfs.resolve(host_path) if host_root != "/" else os.path.realpath(host_path)
            except OSError:
                continue
            if os.path.exists(target) and not os.path.isdir(target) and target not in out:
                out.append(target)
    return out


def _package_paths() -> list[str]:
    """The interpreter's and the package's trees: prefixes, sys.path entries, site-packages."""
    import cri_exporter

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.dirname(os.path.abspath(cri_exporter.__file__)))}
    paths.update(site.getsitepackages())
    cwd = os.getcwd()
    paths.update(p for p in sys.path if p and p != cwd)  # `python -m` puts the working directory first
    out = set()
    for p in paths:
        for q in (os.path.abspath(p), os.path.realpath(p)):
            if os.path.exists(q):
                out.add(q)
    return sorted(out)


def apply(policy: Policy, by: str = confined_read.BY_SERVE) -> Confinement:
    """Restrict this process (the calling thread and what it starts) to the
    policy; never raises: where Landlock is unavailable, says so. `by` names
    whose policy it is (serve's, or the hand-run doctor's) for confined_read."""
    start = time.monotonic()
    try:
        abi = ll.abi_version()
    except ll.LandlockError as err:
        return Confinement(UNAVAILABLE, reason=_why_unavailable(err))
    limits = []
    if abi < FULL_ABI:
        limits.append(f"ABI {abi} < {FULL_ABI}: truncate(2) is not controlled")
    if abi < 4:
        limits.append("ABI < 4: TCP bind/connect not controlled")
    if abi < 6:
        limits.append("ABI < 6: signals and abstract unix sockets not scoped")
    threads = _threads()
    if threads > 1:
        limits.append(f"{threads - 1} other thread(s) started before the restriction stay unrestricted")
    net = ll.NET_BIND_TCP  # connect stays open: the doctor asks the kubelet's healthz on its configured port
    try:
        rs = ll.Ruleset(abi, HANDLED_FS, net, ll.SCOPE_ABSTRACT_UNIX_SOCKET | ll.SCOPE_SIGNAL)
    except ll.LandlockError as err:
        return Confinement(UNAVAILABLE, abi=abi, reason=str(err))
    try:
        for path, rights in policy.rules():
            try:
                fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue  # gone since it was listed
            try:
                rs.allow_path(fd, rights if os.path.isdir(path) else rights & ll.FILE_RIGHTS)
            finally:
                os.close(fd)
        for port in policy.bind_ports:
            rs.allow_port(port, ll.NET_BIND_TCP)
        rs.restrict_self()
    except ll.LandlockError as err:
        return Confinement(UNAVAILABLE, abi=abi, reason=str(err))
    finally:
        rs.close()
    state = ENFORCED if abi >= FULL_ABI and threads <= 1 else PARTIAL
    confined_read.mark_confined(state, by)  # the doctor child inherits it: a denied read is no finding
    return Confinement(state, abi=abi, rules=rs.rules, seconds=time.monotonic() - start, limits=limits)


def _why_unavailable(err: OSError) -> str:
    if err.errno == errno.ENOSYS:
        return "the kernel has no Landlock (before 5.13), or a seccomp profile answers ENOSYS"
    if err.errno == errno.EOPNOTSUPP:
        return "Landlock is built but not enabled (add landlock to the kernel's lsm= boot parameter)"
    if err.errno == errno.EPERM:
        return "a seccomp profile denies the landlock_* system calls"
    return str(err)


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def disabled() -> Confinement:
    return Confinement(DISABLED, reason="--no-confine")


class ConfinementCollector:
    """cri_exporter_confinement_info{state, abi}: one series, always 1."""

    def __init__(self, confinement: Confinement):
        self.confinement = confinement

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        c = self.confinement
        g = GaugeMetricFamily(
            "cri_exporter_confinement_info",
            "The kernel's confinement of the agent (Landlock): state enforced, partial (an older ABI leaves "
            "some access uncontrolled), unavailable or disabled (--no-confine), and the kernel's Landlock ABI "
            "(0: none); always 1.",
            labels=["state", "abi"],
        )
        g.add_metric([c.state, str(c.abi)], 1.0)
        yield g


def log_result(c: Confinement) -> None:
    if c.state in (ENFORCED, PARTIAL):
        log.info("confined", mechanism="landlock", state=c.state, abi=c.abi, rules=c.rules,
                 milliseconds=round(c.seconds * 1000, 1), limits="; ".join(c.limits) or None)
    elif c.state == UNAVAILABLE:
        log.warning("not confined: Landlock is unavailable; serving anyway with uid 0's reach over the host root",
                    reason=c.reason, abi=c.abi)
    else:
        log.info("not confined (--no-confine)")
