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
the stricter, so the first mark is kept.
"""
from __future__ import annotations

import errno
import os

CONFINED_ENV = "CRI_EXPORTER_CONFINED"
CONFINED_BY_ENV = "CRI_EXPORTER_CONFINED_BY"
BY_SERVE, BY_DOCTOR = "serve", "doctor"


def mark_confined(state: str, by: str = BY_SERVE) -> None:
    """Called by confine.apply when the restriction holds (inherited by children)."""
    os.environ[CONFINED_ENV] = state
    os.environ.setdefault(CONFINED_BY_ENV, by)  # an outer domain (serve's) stays in force


def confined() -> bool:
    return bool(os.environ.get(CONFINED_ENV))


class DeniedByConfinement(Exception):
    """A file that exists but the confined agent could not open."""

    def __init__(self, host_path: str, secret: bool, by: str = BY_SERVE):
        self.host_path = host_path
        self.secret = secret
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
        else:
            because = ("probably it was created or replaced (written to a new file and renamed over the old one) "
                       "after the agent started, and the agent's Landlock rules hold the files present at its start; "
                       "`cri-exporter doctor` run by hand, or restarting the agent, reads it")
        super().__init__(f"{host_path} exists but the confined agent could not open it (permission denied): {because}")


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
    raise DeniedByConfinement(os.path.normpath(host_path), _is_secret(host_path),
                              os.environ.get(CONFINED_BY_ENV, BY_SERVE))
