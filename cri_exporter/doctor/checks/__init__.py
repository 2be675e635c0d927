"""Doctor checks by area; importing this package registers them all.

The order here is the order of the report: from the kernel up to the CRI.
"""
from cri_exporter.doctor.checks import (  # noqa: F401
    kernel,
    kernel_health,
    containerd,
    crio,
    drift,
    kubelet,
    certs,
    crictl,
    cni,
    network,
    disk,
    cri,
    running_containers,
)
