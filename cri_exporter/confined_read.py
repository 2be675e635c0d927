"""A config read that serve's own confinement denied: no fault of the node.

Landlock cannot deny, so confine.py allows the host root entry by entry in
every directory holding a secret path (/, /etc, /var/lib/kubelet, ...): a file
created or replaced after serve started (an editor's or a tool's write-and-rename
makes a new inode) can be listed and stat'ed there, but not opened, until serve
restarts. Reported as the file's fault ("does not parse", settings left at
defaults), that is a false alarm on a healthy node, so read_config (the doctor's
one way to read a config, also behind the kubelet facts serve's collectors load)
raises DeniedByConfinement instead. It is not an OSError on purpose: the fact
readers turn OSError into findings about the file; this one passes them and the
doctor's runner reports the check as skipped, naming the cause.

How code knows it is confined: confine.apply sets CONFINED_ENV once the
restriction holds, and CONFINED_BY_ENV to whose policy it is: serve's, or the
hand-run doctor's (confine_doctor.py), which reads a few files serve's does not.
The doctor child serve runs inherits both with the rest of the environment
(and the restriction itself); it stacks its own policy on serve's, which stays
the stricter, so the first mark is kept. CONFINED_SINCE_ENV holds when the
confined process started (its rules were built after): a denied file whose
inode changed later is one the rules cannot hold, and RestartNeeded
(restart_needed.py) tells the operator that only a restart reads it.
"""
from __future__ import annotations

import errno
import os
import time

CONFINED_ENV = "CRI_EXPORTER_CONFINED"
CONFINED_BY_ENV = "CRI_EXPORTER_CONFINED_BY"
CONFINED_SINCE_ENV = "CRI_EXPORTER_CONFINED_SINCE"
BY_SERVE, BY_DOCTOR = "serve", "doctor"


def mark_confined(state: str, by: str = BY_SERVE) -> None:
    """Called by confine.apply when the restriction holds (inherited by children)."""
    os.environ[CONFINED_ENV] = state
    os.environ.setdefault(CONFINED_BY_ENV, by)  # an outer domain (serve's) stays in force
    os.environ.setdefault(CONFINED_SINCE_ENV, repr(process_start()))


def process_start() -> float:
    """When this process started, in seconds since the epoch: before its rules
    were built, so any file whose inode is newer has no rule. From
    /proc/self/stat's starttime and /proc/stat's btime (whole seconds, so up
    to 1 s early: a file replaced in that second before start was read at
    start and opens, so the earlier mark never calls a readable file unseen)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rpartition(")")[2].split()[19])  # field 22, starttime
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def confined_since() -> float | None:
    try:
        return float(os.environ[CONFINED_SINCE_ENV])
    except (KeyError, ValueError):
        return None


def confined() -> bool:
    return bool(os.environ.get(CONFINED_ENV))


def confined_by() -> str | None:
    """Whose policy confines this process (BY_SERVE, BY_DOCTOR), None when unconfined."""
    return os.environ.get(CONFINED_BY_ENV, BY_SERVE) if confined() else None


class DeniedByConfinement(Exception):
    """A file that exists but the confined agent could not open."""

    def __init__(self, host_path: str, secret: bool, by: str = BY_SERVE, changed_at: float | None = None):
        self.host_path = host_path
        self.secret = secret
        # Set when the agent (serve, or the doctor it runs) needs a restart to read the file: its
        # inode changed after the agent started and its mode lets the agent read it (replaced_after_start).
        self.changed_at = changed_at if by == BY_SERVE and not secret else None
        if by == BY_DOCTOR:
            who = "the confined doctor"
            if secret:
                because = ("it is one of the secret paths the doctor does not read (confine.py SECRETS, "
                           "confine_doctor.py); `cri-exporter doctor --no-confine` reads it")
            else:
                because = ("probably it was created or replaced (written to a new file and renamed over the old one) "
                           "while the doctor ran, after it confined itself; running the doctor again reads it")
            super().__init__(f"{host_path} exists but {who} could not open it (permission denied): {because}")
            return
        if secret:
            because = ("it is one of the secret paths the agent never reads (confine.py SECRETS); "
                       "`cri-exporter doctor` run by hand reads it")
        elif self.changed_at is not None:
            because = (f"it was created or replaced (written to a new file and renamed over the old one) at "
                       f"{_utc(self.changed_at)}, after the agent started ({_utc(confined_since())}), and the agent's "
                       f"Landlock rules hold the files present at its start; restarting the agent reads it "
                       f"({RESTART_HOW}); until then `cri-exporter doctor` run by hand reads it")
        else:
            because = ("probably it was created or replaced (written to a new file and renamed over the old one) "
                       "after the agent started, and the agent's Landlock rules hold the files present at its start; "
                       "`cri-exporter doctor` run by hand, or restarting the agent, reads it")
        super().__init__(f"{host_path} exists but the confined agent could not open it (permission denied): {because}")


# What restarts the agent, as the shipped manifests and unit name it (docs/install.md).
RESTART_HOW = ("DaemonSet: `kubectl -n cri-exporter rollout restart daemonset/cri-exporter`, or delete this node's "
               "pod; systemd: `systemctl restart cri-exporter`")


def _utc(t: float | None) -> str:
    if t is None:
        return "at its start"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def replaced_after_start(local_path: str) -> float | None:
    """The ctime of `local_path` when a confined agent's denied open of it can
    only be the Landlock rules missing its inode, else None. Both must hold:
    its inode changed after the agent started (a new inode's ctime is its
    creation or later; a chmod of an old one keeps the rule, and that file
    opens), and its mode lets this process read it (access(2) is not
    Landlock's to deny: a 0600 file of another user is the file's fault, and a
    restart would not read it). Another LSM denying an old file is not this."""
    since = confined_since()
    if since is None:
        return None
    try:
        st = os.stat(local_path)
    except OSError:
        return None
    if st.st_ctime < since or not os.access(local_path, os.R_OK):
        return None
    return st.st_ctime


def _is_secret(host_path: str) -> bool:
    from cri_exporter.confine import SECRETS, matches_prefix

    return any(matches_prefix(tuple(pattern.split("/")), host_path) for pattern in SECRETS)


def check(root: str, host_path: str, err: OSError) -> None:
    """Raise DeniedByConfinement when `err` (from opening `host_path` under the
    host root `root`) is this process's confinement at work; else return.

    Another process's root (/proc/<pid>/root, kube-proxy's config) is no
    split directory's fault: Landlock's ptrace rules deny it whatever the file,
    and its reader says so already."""
    if err.errno != errno.EACCES or not confined() or root.startswith("/proc/"):
        return
    secret = _is_secret(host_path)
    local = err.filename if isinstance(err.filename, str) else os.path.join(root, host_path.lstrip("/"))
    raise DeniedByConfinement(os.path.normpath(host_path), secret, os.environ.get(CONFINED_BY_ENV, BY_SERVE),
                              None if secret else replaced_after_start(local))
