"""Local images for the lab: no registry is reachable, so images are built
from busybox-static and imported into containerd with `ctr`."""

import hashlib
import io
import json
import os
import platform
import subprocess
import tarfile
from pathlib import Path

BUSYBOX = "/bin/busybox"
PAUSE_IMAGE = "localhost/pause:test"
BUSYBOX_IMAGE = "localhost/busybox:test"
IMAGES = {
    PAUSE_IMAGE: ["/bin/sleep", "2147483647"],
    BUSYBOX_IMAGE: ["/bin/sh"],
}
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "crilab"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def _layer() -> bytes:
    """One layer: /bin/busybox, a symlink per applet, the usual top dirs."""
    applets = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    files = {"etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n", "etc/group": b"root:x:0:\n"}
    buf = io.BytesIO()
    # Fixed mtime/owner so that the same busybox always gives the same digest.
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for d in ["bin", "dev", "etc", "proc", "root", "sys", "tmp", "var"]:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        with open(BUSYBOX, "rb") as f:
            data = f.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for name in sorted(set(applets) - {"busybox"}):
            info = tarfile.TarInfo(f"bin/{name}")
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(info)
        for path, content in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def build_archive(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """Return a docker-archive tar holding both lab images (built once, cached).

    One archive with two manifest entries sharing one layer: a single
    `ctr images import` then loads both images.
    """
    with open(BUSYBOX, "rb") as f:
        key = hashlib.sha256(f.read() + repr(IMAGES).encode()).hexdigest()
    path = Path(cache_dir) / f"images-{key[:16]}.tar"
    if path.exists():
        return path
    layer = _layer()
    layer_id = hashlib.sha256(layer).hexdigest()
    manifest = []
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add(tar, f"{layer_id}/layer.tar", layer)
        for tag, cmd in IMAGES.items():
            config = json.dumps({
                "architecture": _ARCH, "os": "linux",
                "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
                "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
            }).encode()
            config_name = hashlib.sha256(config).hexdigest() + ".json"
            _add(tar, config_name, config)
            manifest.append({"Config": config_name, "RepoTags": [tag],
                             "Layers": [f"{layer_id}/layer.tar"]})
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.rename(path)  # atomic: concurrent builders never see a partial tar
    return path


def import_images(socket_path: str, cache_dir: Path = DEFAULT_CACHE, ctr: str = "ctr") -> None:
    """Import the lab images into the k8s.io namespace, the only one CRI sees."""
    archive = build_archive(cache_dir)
    # Bounded: a wedged containerd fails the start (and a cleanup's restart) instead of hanging it.
    subprocess.run([ctr, "-a", socket_path, "-n", "k8s.io", "images", "import", str(archive)],
                   check=True, capture_output=True, timeout=300)
