"""The kernel's Landlock interface (include/uapi/linux/landlock.h), by ctypes.

Landlock (Linux 5.13+) lets an unprivileged process restrict itself: a ruleset
names the access rights it *handles* (denied unless a rule allows them), rules
allow some of them beneath a directory (or on a file), and restrict_self()
makes it irreversible for the calling thread and every process it starts.
Each ABI adds rights; a right the kernel does not know must not be asked for,
so the masks below are cut to the ABI the kernel reports (best effort):

| ABI | kernel | adds |
|---|---|---|
| 1 | 5.13 | execute, read/write files, read dirs, remove, make (the 13 first bits) |
| 2 | 5.19 | REFER (rename and link across directories) |
| 3 | 6.2 | TRUNCATE |
| 4 | 6.7 | TCP bind and connect by port (handled_access_net) |
| 5 | 6.10 | IOCTL_DEV (ioctl on device files) |
| 6 | 6.12 | scopes: abstract unix sockets, signals (a field `scoped`) |
| 7 | 6.15 | audit logging flags of restrict_self |

Debian 12's 6.1 is ABI 2. Only x86_64 and arm64 numbers are known here (the
syscalls are 444-446 on every architecture that has them).
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct

SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1 << 0
RULE_PATH_BENEATH, RULE_NET_PORT = 1, 2
PR_SET_NO_NEW_PRIVS = 38

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13
TRUNCATE = 1 << 14
IOCTL_DEV = 1 << 15

NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

# The filesystem rights each ABI handles.
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}
FS_ALL = (1 << 16) - 1  # ABI 5 and later
# The rights a rule on a non-directory may carry (others are EINVAL there).
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ = READ_FILE | READ_DIR


def fs_rights(abi: int) -> int:
    return _FS_BY_ABI.get(abi, FS_ALL) if abi >= 1 else 0


def net_rights(abi: int) -> int:
    return NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0


def scopes(abi: int) -> int:
    return SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0


class LandlockError(OSError):
    """A Landlock call failed; errno says why (ENOSYS, EOPNOTSUPP, EPERM...)."""


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _call(what: str, *args) -> int:
    ret = _syscall(*args)
    if ret < 0:
        err = ctypes.get_errno()
        raise LandlockError(err, f"{what}: {os.strerror(err)}")
    return int(ret)


def abi_version() -> int:
    """The kernel's Landlock ABI. Raises LandlockError: ENOSYS (kernel before
    5.13, or a seccomp filter answering so), EOPNOTSUPP (built but not in the
    boot's lsm= list), EPERM (a seccomp profile denying it)."""
    return _call("landlock_create_ruleset", SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                 ctypes.c_uint32(CREATE_RULESET_VERSION))


class Ruleset:
    """A ruleset fd: add rules, then restrict_self(); close() in any case."""

    def __init__(self, abi: int, fs: int, net: int = 0, scoped: int = 0):
        self.abi = abi
        self.fs, self.net, self.scoped = fs & fs_rights(abi), net & net_rights(abi), scoped & scopes(abi)
        if abi >= 6:
            attr = struct.pack("=QQQ", self.fs, self.net, self.scoped)
        elif abi >= 4:
            attr = struct.pack("=QQ", self.fs, self.net)
        else:
            attr = struct.pack("=Q", self.fs)
        buf = ctypes.create_string_buffer(attr, len(attr))
        self.fd = _call("landlock_create_ruleset", SYS_CREATE_RULESET, buf, ctypes.c_size_t(len(attr)),
                        ctypes.c_uint32(0))
        self.rules = 0

    def allow_path(self, fd: int, access: int) -> None:
        """Allow `access` (cut to what the ruleset handles) beneath the directory
        (or on the file) that `fd` (an O_PATH fd) names."""
        access &= self.fs
        if not access:
            return
        buf = ctypes.create_string_buffer(struct.pack("=Qi", access, fd), 12)  # packed: 12 bytes
        _call("landlock_add_rule", SYS_ADD_RULE, ctypes.c_int(self.fd), ctypes.c_int(RULE_PATH_BENEATH), buf,
              ctypes.c_uint32(0))
        self.rules += 1

    def allow_port(self, port: int, access: int) -> None:
        access &= self.net
        if not access:
            return
        buf = ctypes.create_string_buffer(struct.pack("=QQ", access, port), 16)
        _call("landlock_add_rule", SYS_ADD_RULE, ctypes.c_int(self.fd), ctypes.c_int(RULE_NET_PORT), buf,
              ctypes.c_uint32(0))
        self.rules += 1

    def restrict_self(self) -> None:
        """Enforce on the calling thread and its future children (threads and
        processes); other threads already running stay unrestricted."""
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:  # required without CAP_SYS_ADMIN
            err = ctypes.get_errno()
            raise LandlockError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
        _call("landlock_restrict_self", SYS_RESTRICT_SELF, ctypes.c_int(self.fd), ctypes.c_uint32(0))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


UNAVAILABLE_ERRNOS = (errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM)
