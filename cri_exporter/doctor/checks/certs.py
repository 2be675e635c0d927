"""Certificates the node depends on, by expiry: the kubelet's client
certificate (its identity to the API server), its serving certificate, the
cluster CA it trusts, and registry certificates. Only certificate blocks are
decoded (facts/certs.py); keys are never read into the report or the bundle."""
from __future__ import annotations

import datetime as dt
import os

import yaml

from cri_exporter.doctor.facts import certs as cert_facts
from cri_exporter.doctor.facts.containerd import registry_roots
from cri_exporter.doctor.facts.files import list_dir
from cri_exporter.doctor.model import Severity, failed, passed, skipped, warned
from cri_exporter.doctor.registry import check
from cri_exporter.doctor.requirements import KUBELET

WARN_DAYS = 30
DEFAULT_CERT_DIR = "/var/lib/kubelet/pki"  # the kubelet's --cert-dir default
REF_KUBELET_TLS = "https://kubernetes.io/docs/reference/access-authn-authz/kubelet-tls-bootstrapping/#certificate-rotation"
REF_KUBEADM_CERTS = "https://kubernetes.io/docs/tasks/administer-cluster/kubeadm/kubeadm-certs/"
REF_HOSTS = "https://github.com/containerd/containerd/blob/main/docs/hosts.md"
now = lambda: dt.datetime.now(dt.timezone.utc)  # noqa: E731 -- tests move the clock


def _judge(files: list[tuple[str, str]], hostfs) -> tuple[list[str], list[str], list[str], list[str]]:
    """(expired, expiring, seen lines, unread) over (role, path) pairs."""
    expired, expiring, seen, unread = [], [], [], []
    t = now()
    for role, path in files:
        found, error = cert_facts.read_certs(hostfs, path)
        if error and not found:
            seen.append(f"{role}: {error}")
            unread.append(role)
            continue
        for c in found:
            days = (c.not_after - t).total_seconds() / 86400
            line = f"{role}: {path} CN={c.subject or '-'} notAfter {c.not_after:%Y-%m-%d %H:%M}Z ({days:.0f} days)"
            seen.append(line)
            if days <= 0:
                expired.append(line)
            elif days < WARN_DAYS:
                expiring.append(line)
    return expired, expiring, seen, unread


# A file the agent may not open is no fault of the node: it is said, never
# counted valid, and never raised above a pass. Under serve's Landlock
# confinement (confine.py), files that hold a key (kubelet-client-current.pem)
# are unreadable by design.
def _valid_summary(what: str, seen: list[str], unread: list[str]):
    valid = len(seen) - len(unread)
    if not valid:
        return skipped(f"no {what} certificate could be read ({', '.join(unread)})", seen="\n".join(seen))
    summary = f"{valid} {what} certificate(s) valid for {WARN_DAYS}+ days"
    if unread:
        summary += f"; not read: {', '.join(unread)}"
        if any("ermission denied" in line for line in seen):
            summary += (" (permission denied: serve's confinement keeps files holding a key, and files renewed "
                        "since it started, unreadable; `cri-exporter doctor` run by hand, or restarting the agent, "
                        "reads them; `seen` says which)")
    return passed(summary, seen="\n".join(seen))


def _kubelet_files(ctx) -> list[tuple[str, str]]:
    k = ctx.kubelet
    cert_dir = k.flags.get("cert-dir", DEFAULT_CERT_DIR)
    out = []
    client = f"{cert_dir}/kubelet-client-current.pem"
    if not ctx.hostfs.is_file(client):
        client = _kubeconfig_client_cert(ctx.hostfs, k.flags.get("kubeconfig", ""))
    if client and ctx.hostfs.is_file(client):
        out.append(("kubelet client certificate", client))
    serving, _ = k.value("tlsCertFile", "")
    candidates = [str(serving)] if serving else [f"{cert_dir}/kubelet-server-current.pem", f"{cert_dir}/kubelet.crt"]
    found = next((p for p in candidates if ctx.hostfs.is_file(p)), None)
    if found:
        out.append(("kubelet serving certificate", found))
    ca = k.flags.get("client-ca-file") or (((k.config.get("authentication") or {}).get("x509") or {}).get("clientCAFile")
                                           if isinstance(k.config.get("authentication"), dict) else None)
    if ca and ctx.hostfs.is_file(str(ca)):
        out.append(("cluster CA", str(ca)))
    return out


# A kubeconfig may embed its key (client-key-data): it is read here for one
# path only, never through read_config, so it never goes into the bundle.
KUBECONFIG_LIMIT = 256 * 1024


def _kubeconfig_client_cert(hostfs, path: str) -> str:
    """The client-certificate file the kubelet's --kubeconfig names (without
    rotation, as k3s writes it: the kubelet then uses that file, not
    kubelet-client-current.pem); relative paths are taken against the
    kubeconfig's directory, as client-go resolves them."""
    if not path:
        return ""
    try:
        data = yaml.safe_load(hostfs.read_text(path, limit=KUBECONFIG_LIMIT))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return ""
    users = data.get("users") if isinstance(data, dict) else None
    for entry in users if isinstance(users, list) else []:
        user = entry.get("user") if isinstance(entry, dict) else None
        cert = user.get("client-certificate") if isinstance(user, dict) else None
        if isinstance(cert, str) and cert:
            return cert if os.path.isabs(cert) else os.path.join(os.path.dirname(path), cert)
    return ""


@check("certs.kubelet", Severity.CRITICAL, requires=(KUBELET,))
def kubelet_certs(ctx):
    """The kubelet's client and serving certificates and the cluster CA: warn
    under 30 days, fail when expired (the node then drops out of the cluster:
    "x509: certificate has expired or is not yet valid")."""
    files = _kubelet_files(ctx)
    if not files:
        return skipped("no kubelet certificate files found (kubelet-client-current.pem, kubelet.crt, clientCAFile)")
    expired, expiring, seen, unread = _judge(files, ctx.hostfs)
    rotate, _ = ctx.kubelet.value("rotateCertificates", False)
    fix = ("kubeadm certs check-expiration   # on a control-plane node\n"
           "kubeadm certs renew all   # control plane; a worker's client certificate is renewed by the kubelet "
           "(rotateCertificates: true) or by rejoining: kubeadm join\n"
           "ls -l /var/lib/kubelet/pki/   # kubelet-client-current.pem links to the newest client certificate")
    refs = [REF_KUBELET_TLS, REF_KUBEADM_CERTS]
    if expired:
        return failed(f"{len(expired)} certificate(s) expired", seen="\n".join(seen),
                      why="The kubelet can no longer authenticate to the API server (or be reached by it): the "
                      "node goes NotReady, logs and exec stop working.", fix=fix, refs=refs)
    if expiring:
        return warned(f"{len(expiring)} certificate(s) expire within {WARN_DAYS} days", seen="\n".join(seen),
                      why="When they expire the node drops out of the cluster."
                      + (" rotateCertificates is on, so the kubelet should have renewed its client certificate "
                         "by now: rotation is failing (check the CSRs: kubectl get csr)." if str(rotate).lower() == "true" else ""),
                      fix=fix, refs=refs)
    return _valid_summary("kubelet", seen, unread)


def _registry_files(ctx) -> list[tuple[str, str]]:
    if ctx.runtime_kind == "containerd":
        base = ctx.containerd.registry().get("config_path") if not ctx.containerd.errors else None
    elif ctx.runtime_kind == "crio":
        base = "/etc/containers/certs.d"  # containers/image's default certs directory
    else:
        base = None
    out = []
    roots = registry_roots(str(base)) if base else []
    for root, host in ((r, h) for r in roots for h in list_dir(ctx.hostfs, r)):
        d = os.path.join(root, host)
        for name in list_dir(ctx.hostfs, d):
            # Docker's certs.d layout: *.crt are CAs, *.cert client certificates; *.key never read.
            if name.endswith((".crt", ".cert", ".pem")) and ctx.hostfs.is_file(os.path.join(d, name)):
                out.append((f"registry {host}", os.path.join(d, name)))
    return out


@check("certs.registry", Severity.WARNING)
def registry_certs(ctx):
    """Registry CA and client certificates under the runtime's certs.d: an
    expired one makes every pull from that registry fail with an x509 error."""
    files = _registry_files(ctx)
    if not files:
        return skipped("no registry certificate files under the runtime's certs.d")
    expired, expiring, seen, unread = _judge(files, ctx.hostfs)
    fix = "Replace the files named above with renewed certificates from the registry's operator; no restart needed."
    if expired:
        return failed(f"{len(expired)} registry certificate(s) expired", seen="\n".join(seen),
                      why="Pulls from that registry fail (\"x509: certificate has expired\"): pods needing a new "
                      "image stay in ImagePullBackOff.", fix=fix, refs=[REF_HOSTS])
    if expiring:
        return warned(f"{len(expiring)} registry certificate(s) expire within {WARN_DAYS} days", seen="\n".join(seen),
                      why="Pulls from that registry will then fail with an x509 error.", fix=fix, refs=[REF_HOSTS])
    return _valid_summary("registry", seen, unread)
