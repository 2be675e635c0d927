"""Run in a child: apply serve's Landlock policy to the host root in argv[1],
then try every access in argv[2] (JSON: [[op, path], ...]) and print, as JSON,
"ok" or the exception's class name for each. The parent asserts."""
from __future__ import annotations

import errno
import json
import os
import sys

from cri_exporter import confine


def attempt(op: str, path: str) -> str:
    try:
        if op == "read":
            with open(path, "rb") as f:
                f.read(1)
        elif op == "list":
            os.listdir(path)
        elif op == "stat":
            os.lstat(path)
        elif op == "opendir":  # what the project-quota ioctl needs: a directory fd
            os.close(os.open(path, os.O_RDONLY | os.O_DIRECTORY))
        elif op == "write":  # an existing file, opened for writing
            os.close(os.open(path, os.O_WRONLY))
        elif op == "create":
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        elif op == "mkdir":
            os.mkdir(path)
        elif op == "truncate":
            os.truncate(path, 0)
        elif op == "otrunc":  # O_TRUNC on a read-only open: truncates where allowed
            os.close(os.open(path, os.O_RDONLY | os.O_TRUNC))
        elif op == "rdwr":
            os.close(os.open(path, os.O_RDWR))
        elif op == "ftruncate":  # through the most the process can open: read-write, else read-only
            try:
                fd = os.open(path, os.O_RDWR)
            except PermissionError:
                fd = os.open(path, os.O_RDONLY)
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)
        elif op == "unlink":
            os.unlink(path)
        elif op == "rename":
            os.rename(path, path + ".moved")
        elif op == "plant":  # made by an unconfined process after the restriction
            pass
        else:
            raise ValueError(op)
    except OSError as err:
        if type(err) is OSError and err.errno is not None:  # EINVAL, EBADF...: the errno says more than the class
            return errno.errorcode.get(err.errno, "OSError")
        return type(err).__name__
    return "ok"


def main() -> None:
    host_root, ops = sys.argv[1], json.loads(sys.argv[2])
    result = confine.apply(confine.build_policy(host_root))
    print(json.dumps({"state": result.state, "abi": result.abi, "rules": result.rules}), flush=True)
    # The parent may create files now (paths made after the restriction), then say go.
    sys.stdin.readline()
    print(json.dumps([attempt(op, path) for op, path in ops]), flush=True)


if __name__ == "__main__":
    main()
