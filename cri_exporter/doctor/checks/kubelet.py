"""The kubelet's side of the contract with the runtime: its config file,
its flags, the endpoint it dials and its eviction thresholds."""
from __future__ import annotations

import os
import stat

from cri_exporter.cri.client import CriClient, CriError, socket_path
from cri_exporter.doctor.facts import procfs
from cri_exporter.doctor.facts.files import resolve
from cri_exporter.doctor.model import Severity, failed, passed, skipped, warned
from cri_exporter.doctor.registry import check

REF_CONFIG = "https://kubernetes.io/docs/reference/config-api/kubelet-config.v1beta1/"
REF_EVICTION = "https://kubernetes.io/docs/concepts/scheduling-eviction/node-pressure-eviction/#hard-eviction-thresholds"
REF_FLAGS = "https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/"


def _no_kubelet(ctx):
    if not ctx.kubelet.present:
        return skipped("no kubelet configuration on this host (config.yaml, kubeadm-flags.env, unit)")
    return None


@check("kubelet.config.parse", Severity.CRITICAL)
def config_parse(ctx):
    """The kubelet exits at start on a config.yaml it cannot decode."""
    skip = _no_kubelet(ctx)
    if skip:
        return skip
    k = ctx.kubelet
    if not k.config_exists:
        if "config" in k.flags:
            return failed(f"the kubelet's --config file {k.config_path} does not exist",
                          f"--config={k.config_path} ({k.flag_sources['config']})",
                          "The kubelet exits at start: the node stays NotReady.",
                          "kubeadm join/init writes it; on a kubeadm node: kubeadm upgrade node phase kubelet-config",
                          [REF_CONFIG])
        return passed("no config file: the kubelet runs on flags", f"flags from {', '.join(k.files)}")
    if k.config_error:
        return failed("the kubelet's config file does not parse", k.config_error,
                      "The kubelet exits at start with \"failed to load Kubelet config file\"; the node goes NotReady.",
                      f"Fix the line shown in {k.config_path} (YAML: spaces, not tabs), then systemctl restart kubelet",
                      [REF_CONFIG])
    kind = k.config.get("kind")
    if kind != "KubeletConfiguration":
        return failed(f"{k.config_path} is not a KubeletConfiguration (kind: {kind!r})", f"kind: {kind!r}",
                      "The kubelet rejects a config file of another kind.",
                      "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration", [REF_CONFIG])
    return passed(f"{k.config_path} parses", f"files: {', '.join(k.files)}")


@check("kubelet.runtime_endpoint", Severity.CRITICAL)
def runtime_endpoint(ctx):
    """The kubelet's containerRuntimeEndpoint must be a socket that answers CRI."""
    skip = _no_kubelet(ctx)
    if skip:
        return skip
    endpoint, where = ctx.kubelet.runtime_endpoint()
    path = socket_path(endpoint)
    seen = f"{endpoint} ({where})"
    fix = ("Point the kubelet at the runtime's socket in /var/lib/kubelet/config.yaml:\n"
           "containerRuntimeEndpoint: unix:///run/containerd/containerd.sock   # CRI-O: unix:///var/run/crio/crio.sock\n"
           "then systemctl restart kubelet")
    if path is None:
        return warned(f"{endpoint} is not a unix socket endpoint", seen,
                      "Linux runtimes listen on unix sockets; other schemes are not checked.", fix, [REF_FLAGS])
    try:
        local = resolve(ctx.hostfs, path)
        st = os.stat(local)
    except OSError:
        return failed(f"the kubelet's runtime socket {path} does not exist", seen,
                      "The kubelet cannot reach the runtime (\"connection error: ... no such file or directory\") "
                      "and the node stays NotReady: the runtime is down or the endpoint is wrong.",
                      "systemctl status containerd   # or crio\n" + fix, [REF_FLAGS])
    if not stat.S_ISSOCK(st.st_mode):
        return failed(f"{path} is not a socket", seen + f"; mode {stat.filemode(st.st_mode)}",
                      "The kubelet cannot dial a regular file or directory.", fix, [REF_FLAGS])
    client = CriClient("unix://" + local, timeout=ctx.cri_timeout)
    try:
        v = client.version()
    except CriError as e:
        return failed(f"the socket {path} does not answer CRI", f"{seen}: {e}",
                      "The kubelet dials this socket for every pod operation; it gets no runtime.",
                      fix, [REF_FLAGS])
    finally:
        client.close()
    return passed(f"{path} answers ({v.runtime_name} {v.runtime_version})", seen)


# Flags removed from the kubelet, with the release that removed them.
REMOVED_FLAGS = {
    "container-runtime": ("1.27", "drop it: remote is the only runtime type"),
    "network-plugin": ("1.24", "drop it: CNI is configured in the runtime"),
    "cni-bin-dir": ("1.24", "set bin_dir in the runtime's CNI config"),
    "cni-conf-dir": ("1.24", "set conf_dir in the runtime's CNI config"),
    "cni-cache-dir": ("1.24", "drop it"),
    "docker-endpoint": ("1.24", "dockershim is gone: use containerd or cri-dockerd"),
    "image-pull-progress-deadline": ("1.24", "drop it"),
    "experimental-dockershim-root-directory": ("1.24", "drop it"),
    "non-masquerade-cidr": ("1.24", "drop it"),
    "dynamic-config-dir": ("1.24", "drop it: dynamic kubelet config was removed"),
    "experimental-check-node-capabilities-before-mount": ("1.28", "drop it"),
    "azure-container-registry-config": ("1.30", "use an image credential provider"),
}
DEPRECATED_FLAGS = {
    "pod-infra-container-image": "since 1.27 only protects the image from GC; set the runtime's sandbox image instead",
}


@check("kubelet.removed_flags", Severity.CRITICAL)
def removed_flags(ctx):
    """A removed flag makes the kubelet exit with "unknown flag" after an upgrade
    (kubeadm-flags.env from older releases still carries --container-runtime)."""
    skip = _no_kubelet(ctx)
    if skip:
        return skip
    k = ctx.kubelet
    removed = [f for f in k.flags if f in REMOVED_FLAGS]
    deprecated = [f for f in k.flags if f in DEPRECATED_FLAGS]
    if not removed and not deprecated:
        return passed("no removed or deprecated kubelet flags", f"{len(k.flags)} flags in {', '.join(k.files)}")
    seen = "\n".join(
        [f"--{f}={k.flags[f]} in {k.flag_sources[f]} (removed in {REMOVED_FLAGS[f][0]})" for f in removed]
        + [f"--{f}={k.flags[f]} in {k.flag_sources[f]} (deprecated)" for f in deprecated])
    fix = "\n".join([f"--{f}: {REMOVED_FLAGS[f][1]}" for f in removed] + [f"--{f}: {DEPRECATED_FLAGS[f]}" for f in deprecated])
    fix += "\nEdit the file named above, then: systemctl daemon-reload && systemctl restart kubelet"
    if removed:
        return failed(f"kubelet flags removed upstream: {', '.join('--' + f for f in removed)}", seen,
                      "A kubelet at or past the release shown exits at start with \"unknown flag\"; the "
                      "node goes NotReady right after the upgrade.", fix, [REF_FLAGS])
    return warned(f"deprecated kubelet flags: {', '.join('--' + f for f in deprecated)}", seen,
                  "They will be removed in a later release and then stop the kubelet.", fix, [REF_FLAGS])


def parse_quantity(q: str) -> float | None:
    """Bytes of a Kubernetes quantity (100Mi, 1G, 500000k); None if unparseable."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
             "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
    q = q.strip()
    for suffix in sorted(units, key=len, reverse=True):
        if q.endswith(suffix):
            try:
                return float(q[: -len(suffix)]) * units[suffix]
            except ValueError:
                return None
    try:
        return float(q)
    except ValueError:
        return None


@check("kubelet.eviction", Severity.WARNING)
def eviction(ctx):
    """evictionHard set partially zeroes the other signals' defaults; and the
    node's available memory against memory.available."""
    skip = _no_kubelet(ctx)
    if skip:
        return skip
    thresholds, where = ctx.kubelet.eviction_hard()
    seen = [f"evictionHard ({where}): " + ", ".join(f"{k}<{v}" for k, v in thresholds.items())]
    problems = []
    if where != "kubelet default":
        from cri_exporter.doctor.facts.kubelet import DEFAULT_EVICTION_HARD

        unset = [s for s in DEFAULT_EVICTION_HARD if s not in thresholds]
        if unset:
            problems.append(f"evictionHard is set partially: {', '.join(unset)} are now 0 (never evict)")
    avail = procfs.meminfo(ctx.hostfs).get("MemAvailable")
    limit = thresholds.get("memory.available")
    if avail is not None and limit:
        total = procfs.meminfo(ctx.hostfs).get("MemTotal", 0)
        need = total * float(limit[:-1]) / 100 if limit.endswith("%") else parse_quantity(limit)
        seen.append(f"MemAvailable={avail // 2**20}Mi")
        if need is not None and avail < need:
            problems.append(f"MemAvailable {avail // 2**20}Mi is below memory.available<{limit}: the kubelet is evicting pods")
    if not problems:
        return passed("eviction thresholds are complete and memory is above them", "\n".join(seen))
    return warned(
        problems[0] if len(problems) == 1 else f"{len(problems)} eviction problems",
        "\n".join(problems + seen),
        "Setting one evictionHard signal drops the defaults of the others (kubelet docs), so the node "
        "can fill its disk without evicting anything; under the memory threshold pods are evicted.",
        "Give every signal in /var/lib/kubelet/config.yaml:\nevictionHard:\n  memory.available: \"100Mi\"\n"
        "  nodefs.available: \"10%\"\n  nodefs.inodesFree: \"5%\"\n  imagefs.available: \"15%\"\n"
        "  imagefs.inodesFree: \"5%\"",
        [REF_EVICTION],
    )
