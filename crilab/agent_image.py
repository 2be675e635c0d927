"""The shipped image, built from the repository's Dockerfile with buildah, offline from any registry.

These machines have no Docker engine and reach no container registry, so the
base image is made here: debootstrap of Debian 12 with its own python3.11 and
venv module, imported into buildah as BASE_IMAGE and handed to the
Dockerfile's `PYTHON_IMAGE` build argument. The released image is built from
the official `python:3.11-slim-bookworm` instead (docs/install.md, "The image"
says what this stand-in does and does not prove).

Everything lives outside the repository, in ~/.cache/crilab/image: the base's
rootfs tar (keyed by what goes into it), buildah's storage (vfs: no overlay
mount needed, and chroot isolation: no runtime needed) and the image as a
docker archive named by its image id. buildah runs with --layers, so a rerun
with nothing changed rebuilds no layer, and an image already exported is not
exported again.

    .venv/bin/python -m crilab.agent_image      # build if needed; print the archive, image id and sizes
"""
from __future__ import annotations

import argparse
import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from crilab.debian import mirror
from crilab.images import DEFAULT_CACHE

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("CRILAB_IMAGE_CACHE", DEFAULT_CACHE / "image"))
SUITE = "bookworm"
# python3.11-venv: the Dockerfile's `python -m venv` (ensurepip and its bundled pip wheel); it
# depends on python3.11-distutils, which only python3-distutils provides, and debootstrap
# resolves no Provides: named here (with its python3-lib2to3);
# python-is-python3: the Dockerfile calls `python`, as in the official image;
# ca-certificates: pip fetches the dependencies over HTTPS during the build.
BASE_PACKAGES = ["python3.11", "python3.11-venv", "python3-distutils", "python3-lib2to3", "python-is-python3",
                 "ca-certificates"]
BASE_IMAGE = "localhost/crilab/python:3.11-bookworm"
IMAGE = "localhost/cri-exporter:test"
# Trimmed as the official slim image trims: no package lists, archives, docs or man pages.
BASE_TRIM = ["var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "usr/share/doc/*", "usr/share/man/*",
             "usr/share/info/*", "var/log/*"]


def _log(msg: str) -> None:
    print(f"agent_image: {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed ({r.returncode}): {' '.join(cmd)}\n{(r.stdout + r.stderr)[-4000:]}")
    return r


def buildah(*args: str, what: str = "buildah", **kw) -> subprocess.CompletedProcess:
    """buildah on the cache's own storage, so nothing lands in /var/lib/containers."""
    if not shutil.which("buildah"):
        raise RuntimeError("buildah is not installed: run scripts/setup.sh (Debian 12 package `buildah`)")
    return _run(["buildah", "--root", str(CACHE / "storage"), "--runroot", _runroot(),
                 "--storage-driver", "vfs", *args], what, **kw)


def base_key() -> str:
    return hashlib.sha256(json.dumps([SUITE, BASE_PACKAGES, BASE_TRIM, mirror()]).encode()).hexdigest()[:16]


def base_rootfs() -> Path:
    """The base's rootfs as a tar (debootstrap, a minute or two; then cached)."""
    key = base_key()
    tar = CACHE / f"base-{key}.tar"
    if tar.exists():
        return tar
    work = CACHE / f"base-{key}.work"
    shutil.rmtree(work, ignore_errors=True)
    rootfs = work / "rootfs"
    _log(f"debootstrap {SUITE} with {', '.join(BASE_PACKAGES)} into {rootfs}")
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs),
          mirror()], "debootstrap")
    for pattern in BASE_TRIM:
        for p in rootfs.glob(pattern):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    # /dev is the runtime's (debootstrap leaves device nodes there).
    for p in (rootfs / "dev").iterdir():
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    tmp = tar.with_suffix(".tmp")
    _run(["tar", "--numeric-owner", "--sort=name", "-C", str(rootfs), "-cf", str(tmp), "."], "tar of the base")
    tmp.rename(tar)
    for old in CACHE.glob("base-*.tar"):
        if old != tar:
            old.unlink()
    shutil.rmtree(work)
    return tar


def base_image() -> str:
    """BASE_IMAGE in buildah's storage: the rootfs tar as one layer (cached by its digest)."""
    tar = base_rootfs()
    containerfile = (f"FROM scratch\nADD {tar.name} /\n"
                     # As the official image sets them (its CMD is python3 too).
                     "ENV LANG=C.UTF-8\nCMD [\"python3\"]\n")
    buildah("build", "--layers", "--isolation", "chroot", "--pull=never", "-t", BASE_IMAGE, "-f", "-", str(CACHE),
            what="buildah build of the base", input=containerfile)
    return BASE_IMAGE


def _prune(kept: set[str]) -> None:
    """Remove the untagged images (cached steps) of earlier builds that this one did not use.

    On vfs every step's image is a whole copy of its filesystem (a build holds
    about 1.3 GB), so without this each change to the code would leave another
    gigabyte behind. The base and this build's steps stay: the next build
    reuses them."""
    listed = buildah("images", "-a", "--no-trunc", "--format", "{{.ID}} {{.Name}}").stdout.split("\n")
    doomed = []
    for line in listed:
        words = line.split()
        if len(words) < 2 or words[1] != "<none>":
            continue
        image_id = words[0].removeprefix("sha256:")
        if not any(image_id.startswith(k) for k in kept):
            doomed.append(image_id)
    for image_id in doomed:
        subprocess.run(["buildah", "--root", str(CACHE / "storage"), "--runroot", _runroot(), "--storage-driver",
                        "vfs", "rmi", image_id], capture_output=True)  # one in use by another stays


def _runroot() -> str:
    return f"/run/crilab/buildah-{hashlib.sha256(str(CACHE).encode()).hexdigest()[:8]}"  # one per storage


def _trust() -> list[str]:
    """The machine's CA bundle over the base's while RUN steps run (not committed to any layer).

    pip fetches the dependencies from PyPI during the build; where the machine
    reaches PyPI through a TLS-inspecting proxy (these machines do), only the
    machine's bundle holds that proxy's CA, and Debian's pip (the venv's,
    from ensurepip) verifies against /etc/ssl/certs/ca-certificates.crt."""
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    return ["--volume", f"{bundle}:{bundle}:ro"] if os.path.exists(bundle) else []


@dataclass
class Built:
    tag: str           # the name the archive carries, for `ctr images import`
    image_id: str      # buildah's image id (the config digest)
    archive: Path      # docker-archive tar: manifest.json, config, one uncompressed tar per layer
    seconds: float     # how long build() took (cached or not)


def context_key() -> str:
    """A digest of what the build reads: the Dockerfile and the files .dockerignore lets in, and the base."""
    h = hashlib.sha256(base_key().encode())
    files = [REPO / "Dockerfile", REPO / ".dockerignore", REPO / "pyproject.toml", REPO / "README.md",
             *sorted(p for p in (REPO / "cri_exporter").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")]
    for f in files:
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def build() -> Built:
    """Build the repository's Dockerfile and export it; nothing at all when its inputs are unchanged.

    buildah's own layer cache would find every step cached too, but on vfs
    storage even a fully cached build copies each stage's filesystem (two
    minutes on these machines), so a build whose inputs are unchanged is not
    started at all."""
    started = time.monotonic()
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time on this machine
        key = context_key()
        archive, meta = CACHE / f"cri-exporter-{key}.tar", CACHE / f"cri-exporter-{key}.json"
        if archive.exists() and meta.exists():
            return Built(IMAGE, json.loads(meta.read_text())["image_id"], archive, time.monotonic() - started)
        base = base_image()
        _log(f"buildah build {REPO / 'Dockerfile'} with PYTHON_IMAGE={base}")
        out = buildah("build", "--layers", "--isolation", "chroot", "--pull=never", "--build-arg",
                      f"PYTHON_IMAGE={base}", *_trust(), "-t", IMAGE, "-f", str(REPO / "Dockerfile"), str(REPO),
                      what="buildah build of the Dockerfile")
        out = out.stdout + out.stderr
        image_id = buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", IMAGE).stdout.strip()
        tmp = archive.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        buildah("push", IMAGE, f"docker-archive:{tmp}:{IMAGE}", what="buildah push to a docker archive")
        tmp.rename(archive)
        meta.write_text(json.dumps({"image_id": image_id}) + "\n")
        _prune(set(re.findall(r"^--> ([0-9a-f]{11,})", out, re.M)) | {image_id})
        for old in [*CACHE.glob("cri-exporter-*.tar"), *CACHE.glob("cri-exporter-*.json")]:
            if old not in (archive, meta):
                old.unlink()
        return Built(IMAGE, image_id, archive, time.monotonic() - started)


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    f = tar.extractfile(name)
    if f is None:  # a directory or link where the archive format has a file
        raise RuntimeError(f"{name} in the image archive is not a regular file")
    return f.read()


def sizes(archive: Path) -> dict:
    """Unpacked: the layers' tars. Compressed: the layers gzipped (level 6, what a push sends), plus config."""
    unpacked = compressed = 0
    with tarfile.open(archive) as tar:
        manifest = json.loads(_member(tar, "manifest.json"))[0]
        config = _member(tar, manifest["Config"])
        for layer in manifest["Layers"]:
            data = _member(tar, layer)
            unpacked += len(data)
            compressed += len(gzip.compress(data, compresslevel=6))
    return {"layers": len(manifest["Layers"]), "unpacked_bytes": unpacked,
            "compressed_bytes": compressed + len(config)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", action="store_true", help="also print the image's compressed and unpacked size")
    args = ap.parse_args()
    built = build()
    out = {"tag": built.tag, "image_id": built.image_id, "archive": str(built.archive),
           "seconds": round(built.seconds, 1)}
    if args.sizes:
        out.update(sizes(built.archive))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
