"""Kernel-enforced least privilege for `cri-exporter doctor` run by hand.

The doctor promises it never changes the node and reads nothing outside
--host-root; run by an operator as root, only its own code kept that. So,
like serve (confine.py, whose policy this reuses), it restricts itself with
Landlock before any thread, CRI call or check (`--no-confine` or
CRI_EXPORTER_CONFINE=false turns it off):

- **Nothing is written** anywhere but /dev/null. The support bundle the
  operator asked for is opened (made) before the restriction and written
  through that descriptor afterwards (bundle.BundleOutput): no directory gets
  a right to make, remove or rename files, not even the bundle's own.
  Redirected stdout is the shell's descriptor, not ours.
- **Read**: serve's policy (the interpreter and package, /etc, its own /proc
  and /sys, and the host root except confine.SECRETS), with DOCTOR_READS
  allowed back: the files the checks need that serve's confinement hides
  (the kubelet's certificates whose files hold their keys, and the kubelet's
  kubeconfig naming its client certificate, for the certs check), each by
  its own rule on the file present at start; every other secret path stays
  closed (pods' volumes, the control plane's keys, admin.conf, /etc/shadow...).
- TCP bind: none (connect stays open: the kubelet's healthz). Signals and
  abstract sockets scoped (ABI 6+), as serve.

Run as serve's doctor child, the restriction stacks on serve's (Landlock
domains nest; the result is their intersection, so serve's stays in force).
"""
from __future__ import annotations

from cri_exporter import confine, confined_read

# Host paths (globs per component) the doctor reads beneath confine.SECRETS.
DOCTOR_READS = (
    *confine.HOST_EXTRA_READ,
    # certs.kubelet: the rotated client and serving certificates (their files hold the key too;
    # only the certificate blocks are decoded, and they never enter the bundle)
    "/var/lib/kubelet/pki/kubelet-client-current.pem", "/var/lib/kubelet/pki/kubelet-server-current.pem",
    # certs.kubelet: the kubelet's --kubeconfig, for the client-certificate file it names
    # (kubeadm's kubelet.conf; k3s/RKE2 name client-kubelet.crt there)
    "/etc/kubernetes/kubelet.conf", "/var/lib/kubelet/kubeconfig", "/var/lib/rancher/*/agent/kubelet.kubeconfig",
)


def build_policy(host_root: str) -> confine.Policy:
    """serve's policy with no listen port and DOCTOR_READS allowed back."""
    return confine.build_policy(host_root, host_reads=DOCTOR_READS)


def apply(host_root: str, enabled: bool) -> confine.Confinement:
    """Confine this process for a doctor run; never raises (unavailable: said in the report)."""
    if not enabled:
        return confine.disabled()
    return confine.apply(build_policy(host_root), by=confined_read.BY_DOCTOR)
