"""A real cgroup v2 node with systemd as PID 1, in a qemu guest under emulation.

The development and CI machines run cgroup v1 (hybrid) without systemd as PID 1,
and their own cgroups must not be touched; today's nodes run cgroup v2 with the
systemd driver. So the lab boots one (facts and traps in
../shared/notes/cgroup-v2-vm.md; KVM does not work on these machines, hence TCG).

Two disks, no network card:
- the image (crilab/vm_image.py, built once and cached, keyed by what goes into
  it): Debian 12 with systemd, containerd 2.x with SystemdCgroup = true,
  python3 and the project's dependencies, set up as a kubeadm node. Booted
  with snapshot=on, so it stays clean between boots.
- the payload (`make_payload`, made for each boot): the project's own wheel
  installed into site/, crilab beside it, the lab images and a `run` script.
  The image's crilab-payload.service mounts it at /payload, runs ./run on the
  serial console, and powers the guest off when it ends. What the run leaves
  in /payload/out comes back to the host (`read_out`, debugfs: no mount).

By hand: `python -m crilab.vm build` prints the image, `python -m crilab.vm shell`
boots it with a root shell on the console (docs/testing.md).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from crilab.images import build_archive
from crilab.vm_image import ENDPOINT, REPO, Image, build_image, run_checked

__all__ = ["Boot", "Image", "boot", "build_image", "build_wheel", "make_payload", "qemu_command", "read_out"]

CONSOLE = "console=ttyS0"
# root=/dev/vda is what the image's initramfs mounts. tsc=reliable: TCG's TSC follows the host's
# clock, the same on every vCPU, but the kernel's sync check fails it under load ("TSCs
# unsynchronized") and falls back to the HPET, after which one boot hung for good (qemu 7.2, 6.1.176).
KERNEL_ARGS = f"root=/dev/vda rw {CONSOLE} systemd.unified_cgroup_hierarchy=1 panic=-1 tsc=reliable"
# -nodefaults: no VGA, floppy or CD-ROM for the kernel to probe under emulation; no HPET (see above);
# -nic none: no network card at all. -no-reboot with panic=-1: a guest that panics ends qemu at once.
QEMU = ["qemu-system-x86_64", "-machine", "pc,hpet=off", "-accel", "tcg,thread=multi", "-cpu", "max",
        "-smp", "2", "-m", "2048", "-nodefaults", "-display", "none", "-nic", "none", "-no-reboot"]
# What the image's crilab-payload.service prints when the payload's script starts.
PAYLOAD_STARTED = b"crilab-payload: running"


def build_wheel(dest: Path) -> Path:
    """The project's own wheel, built from a copy of the sources (the work tree stays clean)."""
    with tempfile.TemporaryDirectory(prefix="crilab-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO / name, src / name)
        shutil.copytree(REPO / "cri_exporter", src / "cri_exporter", ignore=shutil.ignore_patterns("__pycache__"))
        run_checked([sys.executable, "-m", "pip", "-q", "wheel", "--no-deps", "-w", str(dest), str(src)],
                    "building the project's wheel")
    found = sorted(dest.glob("cri_exporter-*.whl"))
    if not found:
        raise RuntimeError(f"pip wheel left no cri_exporter wheel in {dest}")
    return found[-1]


def make_payload(path: Path, run: str, size: str = "128M", tools: Path | None = None) -> Path:
    """An ext4 image holding the project's wheel installed in site/, crilab beside
    it, the lab images (images.tar), `run` (a shell script), an empty out/, and
    `tools` (a directory of host binaries the image lacks) as tools/."""
    with tempfile.TemporaryDirectory(prefix="crilab-payload-") as tmp:
        root = Path(tmp) / "payload"
        root.mkdir()
        wheel = build_wheel(Path(tmp) / "wheel")
        run_checked([sys.executable, "-m", "pip", "-q", "install", "--no-deps", "--no-index", "--target",
                    str(root / "site"), str(wheel)], "installing the project's wheel into the payload")
        shutil.copytree(REPO / "crilab", root / "site/crilab", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(build_archive(), root / "images.tar")
        (root / "out").mkdir()
        if tools is not None:
            shutil.copytree(tools, root / "tools")
        (root / "run").write_text(run)
        (root / "run").chmod(0o755)
        run_checked(["mkfs.ext4", "-q", "-F", "-L", "crilab-payload", "-d", str(root), str(path), size],
                    "mkfs.ext4 payload")
    return path


def read_out(payload: Path, dest: Path) -> Path:
    """Copy the payload's out/ to dest/out (debugfs reads the image: nothing is mounted)."""
    dest.mkdir(parents=True, exist_ok=True)
    run_checked(["debugfs", "-R", f"rdump /out {dest}", str(payload)], "reading the payload's out/")
    return dest / "out"


@dataclass
class Boot:
    returncode: int | None  # None: killed
    seconds: float
    console: Path
    attempts: int = 1
    stuck: str = ""  # why it was killed, if it was

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def tail(self, chars: int = 6000) -> str:
        try:
            return self.console.read_text(errors="replace")[-chars:]
        except OSError as e:
            return f"(no console log: {e})"


def qemu_command(image: Image, payload: Path | None, serial: str) -> list[str]:
    cmd = [*QEMU, "-kernel", str(image.kernel), "-initrd", str(image.initrd),
           # snapshot=on: the guest's writes go to a temporary overlay, the image stays as built
           "-drive", f"file={image.rootfs},format=raw,if=virtio,cache=unsafe,snapshot=on"]
    if payload is not None:
        cmd += ["-drive", f"file={payload},format=raw,if=virtio,cache=writeback"]
    # The serial port is the guest's console: this terminal (with qemu's monitor: Ctrl-A X quits), or a file.
    cmd += ["-serial", "mon:stdio" if serial == "stdio" else f"file:{serial}"]
    return [*cmd, "-append", KERNEL_ARGS]


def boot(image: Image, payload: Path, console: Path, timeout: float, start_timeout: float = 600) -> Boot:
    """Boot until the guest powers itself off, or kill it.

    Emulation speed follows the host's load, so the limits are generous: the
    guest is killed at `timeout` seconds, or at `start_timeout` if its payload
    has not started by then (it normally starts within a minute). A guest
    stuck before its payload ran is booted once more, as nothing of the test
    ran yet; its console is kept beside the new one. A guest that never comes
    up costs the limits and returns the console, never a hang."""
    first = _boot_once(image, payload, console, timeout, start_timeout)
    if not first.stuck.startswith("payload"):
        return first
    console.rename(console.with_suffix(".attempt1.log"))
    again = _boot_once(image, payload, console, timeout - first.seconds, start_timeout)
    again.attempts, again.seconds = 2, first.seconds + again.seconds
    return again


def _boot_once(image: Image, payload: Path, console: Path, timeout: float, start_timeout: float) -> Boot:
    console.unlink(missing_ok=True)
    started = time.monotonic()
    proc = subprocess.Popen(qemu_command(image, payload, str(console)), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    stuck, payload_started = "", False
    while proc.poll() is None:
        elapsed = time.monotonic() - started
        if not payload_started:
            try:
                payload_started = PAYLOAD_STARTED in console.read_bytes()
            except OSError:
                pass
        if elapsed > timeout:
            stuck = f"still running after {timeout:.0f} s"
        elif not payload_started and elapsed > start_timeout:
            stuck = f"payload not started after {start_timeout:.0f} s"
        if stuck:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(2)  # poll interval of the watch on qemu, bounded by its timeouts
    out = proc.communicate()[0]
    if out:
        with open(console, "ab") as f:
            f.write(b"\n--- qemu's own output ---\n" + out)
    return Boot(None if stuck else proc.returncode, time.monotonic() - started, console, stuck=stuck)


SHELL_RUN = f"""#!/bin/sh
export PYTHONPATH=/payload/site
ctr -n k8s.io images import /payload/images.tar >/dev/null
cat <<'EOF'
crilab guest: systemd, cgroup v2, containerd 2.x with SystemdCgroup = true ({ENDPOINT}).
  python3 -m cri_exporter doctor
  python3 -m cri_exporter serve --listen-address 127.0.0.1:9920 &
  python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9920/metrics').read().decode())"
  python3 -m crilab.vm_guest /payload/out    (what the test runs)
Leave the shell to power the guest off.
EOF
exec bash -l
"""


def _main() -> int:
    parser = argparse.ArgumentParser(prog="python -m crilab.vm", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build the image if needed and print where it is")
    shell = sub.add_parser("shell", help="boot the guest with a root shell on this terminal (exit powers off)")
    shell.add_argument("--keep-payload", action="store_true", help="print the payload's path and keep it")
    args = parser.parse_args()
    image = build_image()
    if args.cmd == "build":
        print(image.dir)
        print(json.dumps(image.manifest, indent=1))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="crilab-vm-"))
    payload = make_payload(tmp / "payload.img", SHELL_RUN)
    print(f"booting {image.dir} (qemu under emulation: about a minute to the shell; "
          "Ctrl-A X quits qemu)", flush=True)
    rc = subprocess.call(qemu_command(image, payload, "stdio"))
    if args.keep_payload:
        print(f"payload (out/ holds what the guest left): {payload}")
    else:
        shutil.rmtree(tmp)
    return rc


if __name__ == "__main__":
    sys.exit(_main())
