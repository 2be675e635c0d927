"""crilab: a private, real containerd with kubelet-like pods, for tests and demos."""

from crilab.containerd import Containerd, ensure_packages
from crilab.images import BUSYBOX_IMAGE, PAUSE_IMAGE, build_archive, import_images
from crilab.pods import Pod, restart_container, run_pod

__all__ = ["BUSYBOX_IMAGE", "PAUSE_IMAGE", "Containerd", "Pod", "build_archive",
           "ensure_packages", "import_images", "restart_container", "run_pod"]
