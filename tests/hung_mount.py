"""Run a command with a filesystem that never answers mounted at MOUNTPOINT,
in a mount namespace of its own: `python -m tests.hung_mount MOUNTPOINT -- CMD...`.

A FUSE mount whose /dev/fuse descriptor nobody reads: the kernel's INIT
request is never answered, so every lookup, stat or open under it blocks, as
under a hung NFS or FUSE server, killably (the process's exit closes the
descriptor and aborts them). The namespace keeps the mount from every other
process on the machine (a `df` elsewhere must not hang), and dies with the
command. Needs root (CAP_SYS_ADMIN) and /dev/fuse; no FUSE library.
"""
from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SystemExit(f"hung_mount: {what}: {os.strerror(err)}")


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit("usage: python -m tests.hung_mount MOUNTPOINT -- CMD...")
    target, cmd = argv[0], argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
    fd = os.open("/dev/fuse", os.O_RDWR)
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    _check(libc.mount(b"hung", target.encode(), b"fuse", 0, options), f"mounting FUSE at {target}")
    os.set_inheritable(fd, True)  # held, never read, by the command: the mount lives as long as it
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
