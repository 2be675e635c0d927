"""Exec a command under a seccomp filter that answers the landlock_* system
calls (444-446) with ENOSYS, as a container runtime's seccomp profile that
predates them does: `python seccomp_no_landlock.py CMD ARGS...` (x86_64 and
arm64 share these numbers)."""
from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
LD_W_ABS, JGE_K, JGT_K, RET_K = 0x20, 0x35, 0x25, 0x06


def insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def main() -> None:
    program = b"".join((
        insn(LD_W_ABS, 0, 0, 0),                      # the syscall number
        insn(JGE_K, 0, 2, 444),                       # below 444: allow
        insn(JGT_K, 1, 0, 446),                       # above 446: allow
        insn(RET_K, 0, 0, RET_ERRNO | errno.ENOSYS),  # 444-446: ENOSYS
        insn(RET_K, 0, 0, RET_ALLOW),
    ))
    filt = ctypes.create_string_buffer(program, len(program))

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Prog(len(program) // 8, ctypes.addressof(filt))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) or libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0):
        raise OSError(ctypes.get_errno(), "seccomp")
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
