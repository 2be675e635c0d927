"""The kubelet's side of the contract with the runtime: its config file,
its flags, the endpoint it dials and its eviction thresholds."""
from __future__ import annotations

import http.client
import os
import stat

from cri_exporter.cri.client import CriClient, CriError, socket_path
from cri_exporter.doctor.facts import procfs
from cri_exporter.doctor.facts.files import resolve
from cri_exporter.doctor.model import Severity, failed, passed, skipped, warned
from cri_exporter.doctor.facts.kubelet import DEFAULT_CONFIG, DEFAULT_EVICTION_HARD, DEFAULT_EVICTION_SINCE
from cri_exporter.doctor.facts.quantity import parse_quantity
from cri_exporter.doctor.registry import check
from cri_exporter.doctor.requirements import KUBELET, KUBELET_INSTALLED

REF_CONFIG = "https://kubernetes.io/docs/reference/config-api/kubelet-config.v1beta1/"
REF_EVICTION = "https://kubernetes.io/docs/concepts/scheduling-eviction/node-pressure-eviction/#hard-eviction-thresholds"
REF_FLAGS = "https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/"
REF_DROPIN = "https://kubernetes.io/docs/tasks/administer-cluster/kubelet-config-file/#kubelet-conf-d"
REF_KLOG = "https://github.com/kubernetes/enhancements/tree/master/keps/sig-instrumentation/2845-deprecate-klog-specific-flags-in-k8s-components"


@check("kubelet.config.parse", Severity.CRITICAL, requires=(KUBELET,))
def config_parse(ctx):
    """The kubelet exits at start on a config file or drop-in it cannot decode; without
    --config it runs on its defaults plus drop-ins (k3s, RKE2)."""
    k = ctx.kubelet
    if not k.config_exists and "config" in k.flags:
        return failed(f"the kubelet's --config file {k.config_path} does not exist",
                      seen=f"--config={k.config_path} ({k.flag_sources['config']})",
                      why="The kubelet exits at start: the node stays NotReady.",
                      fix="kubeadm join/init writes it; on a kubeadm node: kubeadm upgrade node phase kubelet-config",
                      refs=[REF_CONFIG])
    if k.config_error:
        return failed("the kubelet's config file does not parse", seen=k.config_error,
                      why="The kubelet exits at start with \"failed to load Kubelet config file\"; the node goes NotReady.",
                      fix=f"Fix the line shown in {k.config_path} (YAML: spaces, not tabs), then systemctl restart kubelet",
                      refs=[REF_CONFIG])
    if k.dropin_errors:
        return failed(f"a kubelet drop-in in {k.dropin_dir} does not parse", seen="\n".join(k.dropin_errors),
                      why="The kubelet exits at start with \"failed to load kubelet dropin file\"; the node goes NotReady.",
                      fix="Fix the file named above (YAML or JSON, a KubeletConfiguration), then restart the kubelet",
                      refs=[REF_CONFIG, REF_DROPIN])
    seen = f"command line: {k.command_from}\nfiles: {', '.join(k.files)}"
    dropins = f"{len(k.dropins)} drop-in(s) in {k.dropin_dir}" if k.dropins else ""
    if not k.config_exists:
        # No --config: the kubelet starts from its built-in defaults, then the drop-ins and flags.
        return passed("no config file: the kubelet runs on its defaults" + (f", {dropins}" if dropins else "")
                      + " and flags", seen=seen)
    kind = k.config.get("kind")
    if kind != "KubeletConfiguration":
        return failed(f"{k.config_path} is not a KubeletConfiguration (kind: {kind!r})", seen=f"kind: {kind!r}",
                      why="The kubelet rejects a config file of another kind.",
                      fix="apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration", refs=[REF_CONFIG])
    return passed(f"{k.config_path}{' and ' + dropins if dropins else ''} parse{'' if dropins else 's'}", seen=seen)


@check("kubelet.runtime_endpoint", Severity.CRITICAL, requires=(KUBELET,))
def runtime_endpoint(ctx):
    """The kubelet's containerRuntimeEndpoint must be a socket that answers CRI."""
    endpoint, where = ctx.kubelet.runtime_endpoint()
    path = socket_path(endpoint)
    seen = f"{endpoint} ({where})"
    fix = ("Point the kubelet at the runtime's socket in /var/lib/kubelet/config.yaml:\n"
           "containerRuntimeEndpoint: unix:///run/containerd/containerd.sock   # CRI-O: unix:///var/run/crio/crio.sock\n"
           "then systemctl restart kubelet")
    if path is None:
        return warned(f"{endpoint} is not a unix socket endpoint", seen=seen,
                      why="Linux runtimes listen on unix sockets; other schemes are not checked.", fix=fix, refs=[REF_FLAGS])
    try:
        local = resolve(ctx.hostfs, path)
        st = os.stat(local)
    except OSError:
        return failed(f"the kubelet's runtime socket {path} does not exist", seen=seen,
                      why="The kubelet cannot reach the runtime (\"connection error: ... no such file or directory\") "
                      "and the node stays NotReady: the runtime is down or the endpoint is wrong.",
                      fix="systemctl status containerd   # or crio\n" + fix, refs=[REF_FLAGS])
    if not stat.S_ISSOCK(st.st_mode):
        return failed(f"{path} is not a socket", seen=seen + f"; mode {stat.filemode(st.st_mode)}",
                      why="The kubelet cannot dial a regular file or directory.", fix=fix, refs=[REF_FLAGS])
    client = CriClient("unix://" + local, timeout=ctx.cri_timeout)
    try:
        v = client.version()
    except CriError as e:
        return failed(f"the socket {path} does not answer CRI", seen=f"{seen}: {e}",
                      why="The kubelet dials this socket for every pod operation; it gets no runtime.",
                      fix=fix, refs=[REF_FLAGS])
    finally:
        client.close()
    return passed(f"{path} answers ({v.runtime_name} {v.runtime_version})", seen=seen)


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
# klog's flags, removed from the kubelet in 1.26 (KEP-2845: deprecated in 1.23).
for _flag in ("add-dir-header", "alsologtostderr", "log-backtrace-at", "log-dir", "log-file", "log-file-max-size",
              "logtostderr", "one-output", "skip-headers", "skip-log-headers", "stderrthreshold"):
    REMOVED_FLAGS[_flag] = ("1.26", "drop it: the kubelet logs to stderr; journald or the log agent keeps it (KEP-2845)")
# Removed in 1.35 (it had only kept the image from GC since 1.27).
REMOVED_FLAGS["pod-infra-container-image"] = ("1.35", "drop it: the runtime's sandbox image is the pause image "
                                                       "(containerd pinned_images.sandbox / sandbox_image, CRI-O pause_image)")
# Every kubelet still in support (1.31 and later, vendors' long-term ones
# included) refuses flags removed this long ago, whatever this node's version.
REMOVED_EVERYWHERE = (1, 30)


def _removal(flag: str, version) -> str:
    """"fail" when this kubelet refuses the flag, "warn" when it still takes it
    (or its version is unknown and the removal is recent)."""
    release = tuple(int(x) for x in REMOVED_FLAGS[flag][0].split("."))
    if version is not None:
        return "fail" if version.minor_tuple >= release else "warn"
    return "fail" if release <= REMOVED_EVERYWHERE else "warn"


@check("kubelet.removed_flags", Severity.CRITICAL, requires=(KUBELET,))
def removed_flags(ctx):
    """A removed flag makes the kubelet exit with "unknown flag" after an upgrade
    (kubeadm-flags.env from older releases still carries --container-runtime;
    --pod-infra-container-image is gone in 1.35, klog's --logtostderr in 1.26)."""
    k = ctx.kubelet
    version = k.version
    known = k.version_text
    removed = [f for f in k.flags if f in REMOVED_FLAGS]
    verdicts = {f: _removal(f, version) for f in removed}
    # kubeadm itself writes --pod-infra-container-image into kubeadm-flags.env
    # (cmd/kubeadm/app/phases/kubelet/flags.go, at least through 1.33): on a
    # kubelet that still takes it, that is kubeadm's own healthy layout.
    kubeadm_own = [f for f in removed if f == "pod-infra-container-image" and verdicts[f] == "warn"
                   and version is not None and k.flag_sources[f].endswith("/kubeadm-flags.env")]
    removed = [f for f in removed if f not in kubeadm_own]
    if not removed:
        notes = [f"--{f} in {k.flag_sources[f]}: written there by kubeadm; kubelet {version} still takes it, 1.35 "
                 "refuses it: make sure it is gone from that file before the kubelet reaches 1.35" for f in kubeadm_own]
        return passed("no removed kubelet flags", seen="\n".join(
            [f"{len(k.flags)} flags from {k.command_from or ', '.join(k.files)}; {known}"] + notes))
    seen = "\n".join(
        [f"--{f}={k.flags[f]} in {k.flag_sources[f]} (removed in {REMOVED_FLAGS[f][0]}"
         + ("" if verdicts[f] == "fail" else ": this kubelet still takes it") + ")" for f in removed] + [known])
    fix = "\n".join(f"--{f}: {REMOVED_FLAGS[f][1]}" for f in removed)
    fix += "\nEdit the file named above, then: systemctl daemon-reload && systemctl restart kubelet"
    fatal = [f for f in removed if verdicts[f] == "fail"]
    if fatal:
        return failed(f"kubelet flags removed upstream: {', '.join('--' + f for f in fatal)}", seen=seen,
                      why="The kubelet exits at start with \"unknown flag\"; the node goes NotReady (right "
                      "after the upgrade that removed it).", fix=fix, refs=[REF_FLAGS, REF_KLOG])
    return warned(f"kubelet flags removed in a later release: {', '.join('--' + f for f in removed)}", seen=seen,
                  why="The kubelet release that removed them exits at start with \"unknown flag\": the upgrade "
                  "takes the node down.", fix=fix, refs=[REF_FLAGS, REF_KLOG])


@check("kubelet.eviction", Severity.WARNING, requires=(KUBELET,))
def eviction(ctx):
    """evictionHard set partially zeroes the other signals' defaults; and the
    node's available memory against memory.available."""
    thresholds, where = ctx.kubelet.eviction_hard()
    seen = [f"evictionHard ({where}): " + ", ".join(f"{k}<{v}" for k, v in thresholds.items())]
    problems = []
    version = ctx.kubelet.version
    # imagefs.inodesFree is a default from 1.30 on (kubernetes PR 121834): an older (or
    # unknown) kubelet may never have had it, so leaving it out is no finding there.
    signals = [x for x in DEFAULT_EVICTION_HARD if x not in DEFAULT_EVICTION_SINCE
               or (version and version.at_least(*DEFAULT_EVICTION_SINCE[x]))]
    unset = [x for x in signals if x not in thresholds]
    if unset and where != "kubelet default":
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
        return passed("eviction thresholds are complete and memory is above them", seen="\n".join(seen))
    return warned(
        problems[0] if len(problems) == 1 else f"{len(problems)} eviction problems",
        seen="\n".join(problems + seen),
        why="Setting one evictionHard signal in the config file drops the defaults of the others (kubelet docs; "
        "unless mergeDefaultEvictionSettings: true, 1.33+), so the node can fill its disk without evicting "
        "anything; under the memory threshold pods are evicted.",
        fix=f"Give every signal in {ctx.kubelet.config_path or DEFAULT_CONFIG}:\nevictionHard:\n  memory.available: \"100Mi\"\n"
        "  nodefs.available: \"10%\"\n  nodefs.inodesFree: \"5%\"\n  imagefs.available: \"15%\"\n"
        "  imagefs.inodesFree: \"5%\"\n# or, on kubelet 1.33+, keep the defaults of the signals you leave out:\n"
        "mergeDefaultEvictionSettings: true",
        refs=[REF_EVICTION],
    )


HEALTHZ_TIMEOUT = 2.0


def _healthz(host: str, port: int) -> tuple[int | None, str]:
    """(HTTP status, body or the error) of GET /healthz on the kubelet's healthz server."""
    conn = http.client.HTTPConnection(host, port, timeout=HEALTHZ_TIMEOUT)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        return resp.status, resp.read(512).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException) as e:
        return None, f"{type(e).__name__}: {e}"
    finally:
        conn.close()


@check("kubelet.healthz", Severity.CRITICAL, requires=(KUBELET, KUBELET_INSTALLED))
def healthz(ctx):
    """The kubelet answers its healthz endpoint (healthzBindAddress:healthzPort,
    default 127.0.0.1:10248) with "ok", asked with a 2 s timeout; only where
    the doctor shares the node's network (on the node, or hostNetwork)."""
    k = ctx.kubelet
    port, pwhere = k.value("healthzPort", 10248)
    address, awhere = k.value("healthzBindAddress", "127.0.0.1")
    try:
        port = int(port)
    except (TypeError, ValueError):
        return skipped(f"healthzPort {port!r} ({pwhere}) is not a port")
    if port == 0:
        return skipped(f"the kubelet's healthz server is off (healthzPort: 0, {pwhere})")
    if not ctx.on_node_network:
        return skipped("the doctor does not share the node's network namespace: the kubelet's loopback is not reachable")
    host = "127.0.0.1" if str(address) in ("", "0.0.0.0") else ("::1" if str(address) == "::" else str(address))
    status, body = _healthz(host, port)
    seen = f"GET http://{host}:{port}/healthz -> {status if status is not None else 'no answer'}: {body[:200]}"
    if status == 200 and body == "ok":
        return passed("the kubelet reports healthy", seen=seen)
    return failed(
        "the kubelet does not answer healthz" if status is None else f"the kubelet's healthz says {status}",
        seen=f"{seen}\n(healthzPort {pwhere}; healthzBindAddress {awhere})",
        why="The kubelet is down, restarting or unhealthy (its PLEG or runtime checks fail): the node goes "
        "NotReady and its pods are not managed.",
        fix="systemctl status kubelet\njournalctl -u kubelet -e --no-pager | tail -50",
        refs=[REF_FLAGS])
