"""Ground truth for ephemeral storage, computed apart from the exporter's walk:
os.walk and os.lstat, the way `du -x --block-size=1` counts (allocated
blocks, the top directory included, a hard-linked file once)."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path


def du(path: Path | str) -> tuple[int, int]:
    """(bytes, inodes) of the tree at `path`."""
    top = os.lstat(path)
    total, inodes, seen = top.st_blocks * 512, 1, set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in list(dirnames) + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_dev != top.st_dev:
                if name in dirnames:
                    dirnames.remove(name)
                continue
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
            total += st.st_blocks * 512
            inodes += 1
    return total, inodes


def gnu_du(path: Path | str) -> tuple[int, int]:
    """The same from coreutils' du, a second independent reader."""
    b = subprocess.run(["du", "-sx", "--block-size=1", str(path)], capture_output=True, text=True, check=True)
    i = subprocess.run(["du", "-sx", "--inodes", str(path)], capture_output=True, text=True, check=True)
    return int(b.stdout.split()[0]), int(i.stdout.split()[0])


def kubelet_unit(host: Path, root_dir: str, pod_logs_dir: str, eviction: str = "") -> None:
    """A kubelet.service with --root-dir and a config file naming podLogsDirectory,
    as kubeadm lays them out, under the test's host root (the lab runs no kubelet)."""
    unit = host / "etc/systemd/system/kubelet.service"
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text("[Service]\nExecStart=/usr/bin/kubelet --config=/etc/kubernetes/kubelet.yaml "
                    f"--root-dir={root_dir}\n")
    config = host / "etc/kubernetes/kubelet.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
                      f"podLogsDirectory: {pod_logs_dir}\n{eviction}")
