"""The image of the cgroup v2 + systemd guest (crilab.vm boots it): what goes into it,
how it is built, and where it is cached.

Debian 12 minbase with systemd, dbus, containerd 2.x from sid (`Suite("sid")`)
over Debian 12's runc, the CNI plugins, python3 and the project's dependencies
as CPython 3.11 manylinux wheels; Debian 12's kernel and a busybox initramfs
that loads the virtio and ext4 modules. It is set up as a kubeadm node would be
(modules, sysctls, containerd's version 3 config with SystemdCgroup = true, the
kubelet's config.yaml) and has a unit that runs the payload disk's script.

Built once into ~/.cache/crilab/vm/image-<key>; the key is a digest of this
file and of what it takes in (package names, the containerd package, the
project's requirements, busybox), so a change to any of them builds anew and
nothing else does: the boot and the payload live in crilab/vm.py.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from crilab import versions
from crilab.debian import Suite, mirror
from crilab.images import BUSYBOX, DEFAULT_CACHE

VM_CACHE = Path(os.environ.get("CRILAB_VM_CACHE", DEFAULT_CACHE / "vm"))
REPO = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
KERNEL_META = "linux-image-amd64"
# containerd 2.1.9 from sid (2026-11-25); sid's runc needs glibc 2.38, Debian 12's 1.1.5 works under it
CONTAINERD = versions.get("2.1")
CONTAINERD_SUITE = CONTAINERD.suite
GUEST_PACKAGES = ("systemd", "systemd-sysv", "dbus", "udev", "kmod", "containerd", "runc", "iproute2",
                  "containernetworking-plugins", "busybox-static", "python3")
# What the initramfs loads to mount the root (Debian builds virtio and ext4 as modules);
# their dependencies come from modules.dep. ext4 asks the crypto API for crc32c at mount.
INITRD_MODULES = ("virtio_pci", "virtio_blk", "ext4", "crc32c_generic")
IMAGE_SIZE = "3G"
SITE = "usr/local/lib/python3.11/dist-packages"  # Debian's python3 reads dist-packages, not site-packages
# CPython 3.11 on Debian 12 (glibc 2.36): which wheels install there.
WHEEL_TARGET = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
                "--abi", "cp311", "--abi", "abi3", "--abi", "none",
                "--platform", "manylinux_2_36_x86_64", "--platform", "manylinux_2_28_x86_64",
                "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                "--platform", "manylinux2010_x86_64", "--platform", "manylinux_2_12_x86_64"]
ENDPOINT = "unix:///run/containerd/containerd.sock"
PAUSE_IMAGE = "localhost/pause:test"
POD_SUBNET = "10.88.0.0/24"


def _log(msg: str) -> None:
    print(f"crilab.vm: {msg}", file=sys.stderr, flush=True)


def run_checked(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess[str]:
    """Run a build step; a failure raises with the step's name and the end of its output."""
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1200, **kw)
    except (OSError, subprocess.SubprocessError) as e:
        detail = (getattr(e, "stderr", None) or "") + (getattr(e, "stdout", None) or "") or str(e)
        raise RuntimeError(f"{what} failed: {detail[-4000:]}") from e


@dataclass(frozen=True)
class Image:
    dir: Path

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.gz"

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs.img"

    @property
    def manifest(self) -> dict:
        """What went into it: versions of the kernel, containerd, runc, python, wheels."""
        manifest: dict = json.loads((self.dir / "manifest.json").read_text())
        return manifest


def dependencies() -> list[str]:
    """The project's runtime requirements, as pyproject.toml states them."""
    with open(REPO / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def image_key(containerd: Path) -> str:
    """A digest of what goes into the image. Known without the network once the
    containerd package is unpacked: package names rather than the versions a
    fresh build would resolve, so a cached image is reused until the recipe
    (this file), the requirements or the containerd package change."""
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(json.dumps([SUITE, KERNEL_META, GUEST_PACKAGES, containerd.name, dependencies(),
                         containerd_config()]).encode())
    with open(BUSYBOX, "rb") as f:
        h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def build_image(cache: Path = VM_CACHE) -> Image:
    """The guest image, built if missing (1 to 4 minutes on 2 cores), else the cached one."""
    if CONTAINERD_SUITE is None:
        raise RuntimeError(f"containerd {CONTAINERD.name} for the guest must come from a Debian suite's .deb")
    containerd = Suite(CONTAINERD_SUITE).unpack("containerd")
    key = image_key(containerd)
    image = Image(Path(cache) / f"image-{key}")
    if (image.dir / ".done").exists():
        return image
    Path(cache).mkdir(parents=True, exist_ok=True)
    with open(Path(cache) / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building the same image
        if (image.dir / ".done").exists():
            return image
        work = Path(cache) / f"build-{key}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            _build(work, containerd)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        (work / ".done").write_text(key + "\n")
        work.rename(image.dir)
        for old in Path(cache).glob("image-*"):  # one image per cache: each is about 1 GB
            if old != image.dir:
                shutil.rmtree(old, ignore_errors=True)
    return image


def _build(work: Path, containerd: Path) -> None:
    rootfs = work / "rootfs"
    started = time.monotonic()
    kernel_pkg = Suite(SUITE).depends(KERNEL_META)[0]
    kernel = Suite(SUITE).unpack(kernel_pkg)
    release = kernel_pkg.removeprefix("linux-image-")
    _log(f"debootstrap {SUITE} into {rootfs} (a few minutes)")
    run_checked(["debootstrap", "--variant=minbase", f"--include={','.join(GUEST_PACKAGES)}", SUITE, str(rootfs),
                mirror()], "debootstrap")
    _log(f"kernel {kernel.name}, containerd {containerd.name}")
    shutil.copy(kernel / "boot" / f"vmlinuz-{release}", work / "vmlinuz")
    (rootfs / "lib/modules").mkdir(parents=True, exist_ok=True)
    run_checked(["cp", "-a", str(kernel / "lib/modules" / release), str(rootfs / "lib/modules/")], "copying modules")
    run_checked(["depmod", "-b", str(rootfs), release], "depmod")
    _make_initrd(rootfs / "lib/modules" / release, work / "initrd.gz")
    # containerd 2.x over the 1.6.20 that Debian 12's package put there (its unit stays).
    for binary in (containerd / "usr/bin").iterdir():
        shutil.copy2(binary, rootfs / "usr/bin" / binary.name)
    _configure(rootfs)
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):  # debootstrap's downloads: 150 MB
        deb.unlink()
    wheels = _install_dependencies(rootfs, work / "wheels")
    manifest: dict[str, object] = {
        "kernel": kernel.name, "containerd": containerd.name,
        "runc": _dpkg_version(rootfs, "runc"), "python3": _dpkg_version(rootfs, "python3"),
        "systemd": _dpkg_version(rootfs, "systemd"), "wheels": wheels,
    }
    shutil.rmtree(work / "wheels")
    _log("mkfs.ext4 -d")
    run_checked(["mkfs.ext4", "-q", "-F", "-L", "crilab-root", "-d", str(rootfs), str(work / "rootfs.img"), IMAGE_SIZE],
                "mkfs.ext4")
    shutil.rmtree(rootfs)
    manifest["build_seconds"] = round(time.monotonic() - started)
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    _log(f"image built in {manifest['build_seconds']} s")


def _dpkg_version(rootfs: Path, package: str) -> str:
    return run_checked(["dpkg-query", f"--admindir={rootfs}/var/lib/dpkg", "-W", "-f=${Version}", package],
                       f"dpkg-query {package}").stdout


def _module_order(moddir: Path, wanted: tuple[str, ...]) -> list[str]:
    """Module files (relative to moddir) in load order: dependencies first."""
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {re.sub(r"\.ko(\.\w+)?$", "", Path(p).name).replace("-", "_"): p for p in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps[path]:
            visit(dep)
        order.append(path)

    for name in wanted:
        visit(by_name[name])
    return order


INIT = """#!/bin/sh
# crilab initramfs: load what mounting /dev/vda needs, then hand over to systemd.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.load); do insmod "/lib/modules/$m" || echo "initramfs: insmod $m failed"; done
for i in $(seq 1 300); do [ -b /dev/vda ] && break; sleep 0.1; done
if ! mount -t ext4 -o rw /dev/vda /newroot; then
    echo "initramfs: cannot mount /dev/vda"; ls /dev; exit 1   # init exits: panic, qemu stops (-no-reboot)
fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
"""
_INIT_APPLETS = ("sh", "mount", "umount", "insmod", "cat", "echo", "seq", "sleep", "ls", "switch_root")


def _make_initrd(moddir: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="crilab-initrd-") as tmp:
        root = Path(tmp)
        for d in ("bin", "dev", "proc", "sys", "newroot", "lib/modules"):
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy(BUSYBOX, root / "bin/busybox")
        for applet in _INIT_APPLETS:
            (root / "bin" / applet).symlink_to("busybox")
        order = _module_order(moddir, INITRD_MODULES)
        for rel in order:
            (root / "lib/modules" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(moddir / rel, root / "lib/modules" / rel)
        (root / "modules.load").write_text("\n".join(order) + "\n")
        (root / "init").write_text(INIT)
        (root / "init").chmod(0o755)
        files = run_checked(["find", "."], "listing the initramfs", cwd=root).stdout
        cpio = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], input=files.encode(),
                              cwd=root, check=True, capture_output=True).stdout
        out.write_bytes(subprocess.run(["gzip", "-9"], input=cpio, check=True, capture_output=True).stdout)


def containerd_config() -> str:
    """containerd 2.x's version 3 config as a kubeadm node with the systemd driver has it: the
    lab's own (crilab.versions), with the node's paths and SystemdCgroup = true. Debian's
    containernetworking-plugins install in /usr/lib/cni, not /opt/cni/bin. No
    restrict_oom_score_adj: as root on a real kernel runc may set the pods' oom_score_adj."""
    return versions.render_config(CONTAINERD.name, sandbox_image=PAUSE_IMAGE, cni_bin_dir="/usr/lib/cni",
                                  cni_conf_dir="/etc/cni/net.d", systemd_cgroup=True, restrict_oom_score_adj=False)


def kubelet_config(cgroup_driver: str = "systemd") -> str:
    """/var/lib/kubelet/config.yaml as kubeadm writes it, reduced to what the doctor reads."""
    return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: {cgroup_driver}
containerRuntimeEndpoint: {ENDPOINT}
"""


PAYLOAD_UNIT = """[Unit]
Description=crilab payload: /dev/vdb's run script, then power off
Wants=containerd.service
After=containerd.service dbus.service systemd-modules-load.service systemd-sysctl.service crilab-uplink.service
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/crilab-payload
StandardInput=tty-force
StandardOutput=inherit
StandardError=inherit
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
"""

# The guest has no network card (nothing may leave it), but a node has an uplink: the kubelet picks its
# IP from the default route, and the doctor fails a node without one. A dummy link in TEST-NET-1
# (RFC 5737: documentation only, routed nowhere) stands in for it.
UPLINK_UNIT = """[Unit]
Description=crilab: a dummy eth0 with a default route, standing in for a node's uplink
Before=network.target containerd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/ip link add eth0 type dummy
ExecStart=/bin/ip address add 192.0.2.10/24 dev eth0
ExecStart=/bin/ip link set eth0 up
ExecStart=/bin/ip route add default via 192.0.2.1

[Install]
WantedBy=multi-user.target
"""

PAYLOAD_RUNNER = """#!/bin/sh
# Runs the payload disk's ./run on the console; the unit powers the guest off after it.
mkdir -p /payload
if ! mount /dev/vdb /payload; then
    echo "crilab-payload: no payload disk at /dev/vdb"; exit 1
fi
echo "crilab-payload: running /payload/run (uptime $(cut -d' ' -f1 /proc/uptime) s)"
(cd /payload && ./run)
rc=$?
sync
umount /payload || mount -o remount,ro /payload
echo "crilab-payload: run exited with $rc (uptime $(cut -d' ' -f1 /proc/uptime) s)"
exit $rc
"""


def _configure(rootfs: Path) -> None:
    files = {
        "etc/hostname": "crilab-node\n",
        "etc/hosts": "127.0.0.1 localhost\n127.0.1.1 crilab-node\n",
        "etc/fstab": "/dev/vda / ext4 rw 0 1\n",
        "etc/containerd/config.toml": containerd_config(),
        "etc/cni/net.d/10-crilab.conflist": json.dumps({
            "cniVersion": "1.0.0", "name": "crilab", "plugins": [{
                "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
                "ipam": {"type": "host-local", "subnet": POD_SUBNET}}]}, indent=1) + "\n",
        # What the Kubernetes docs ask of a node ("Container Runtimes", prerequisites).
        "etc/modules-load.d/k8s.conf": "overlay\nbr_netfilter\n",
        "etc/sysctl.d/k8s.conf": ("net.bridge.bridge-nf-call-iptables = 1\n"
                                  "net.bridge.bridge-nf-call-ip6tables = 1\nnet.ipv4.ip_forward = 1\n"),
        # /dev/kvm cannot be used under TCG; the modules only add noise to the console.
        "etc/modprobe.d/crilab.conf": "blacklist kvm\nblacklist kvm_intel\nblacklist kvm_amd\n",
        "etc/systemd/system/crilab-payload.service": PAYLOAD_UNIT,
        "etc/systemd/system/crilab-uplink.service": UPLINK_UNIT,
        "usr/local/sbin/crilab-payload": PAYLOAD_RUNNER,
    }
    for rel, text in files.items():
        path = rootfs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
        path.write_text(text)
    (rootfs / "usr/local/sbin/crilab-payload").chmod(0o755)
    systemd = rootfs / "etc/systemd/system"
    (systemd / "multi-user.target.wants").mkdir(parents=True, exist_ok=True)
    for unit in ("crilab-payload.service", "crilab-uplink.service"):
        (systemd / "multi-user.target.wants" / unit).symlink_to(f"/etc/systemd/system/{unit}")
    # The console belongs to the payload; timers would only wake up mid-test.
    for unit in ("serial-getty@ttyS0.service", "getty@tty1.service", "apt-daily.timer", "apt-daily-upgrade.timer",
                 "e2scrub_all.timer", "fstrim.timer", "systemd-timesyncd.service"):
        link = systemd / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    (rootfs / "var/lib/kubelet").mkdir(parents=True, exist_ok=True)
    (rootfs / "var/lib/kubelet/config.yaml").write_text(kubelet_config("systemd"))


def _install_dependencies(rootfs: Path, wheels: Path) -> list[str]:
    """The project's requirements as CPython 3.11 manylinux wheels, into the guest's dist-packages."""
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    reqs = dependencies()
    run_checked([*pip, "download", *WHEEL_TARGET, "-d", str(wheels), *reqs], "downloading the dependencies' wheels")
    run_checked([*pip, "install", *WHEEL_TARGET, "--no-index", "--find-links", str(wheels), "--target",
                str(rootfs / SITE), *reqs], "installing the dependencies' wheels into the guest")
    return sorted(p.name for p in wheels.glob("*.whl"))
