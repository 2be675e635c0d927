"""A pod spec from a manifest, run through CRI the way the kubelet runs it.

The DaemonSet in deploy/kubernetes is the contract operators deploy; this
module turns its pod template into the RunPodSandbox and CreateContainer
calls a kubelet would make (kuberuntime, Kubernetes 1.30-1.34), so the
shipped image runs in the lab's containerd with the manifest's own
namespaces, user, capabilities, read-only root, mounts, arguments and memory
limit. Every field of the template is either translated or named in
NOT_TRANSLATED with the reason; an unknown field is an error, so a manifest
change cannot silently go untested.

What stands in for the node (the only departures, each in HostPaths):
- a hostPath the node would have but this machine keeps elsewhere (the lab
  containerd's socket and config directory for /run/containerd and
  /etc/containerd);
- a hostPath this machine lacks (no kubelet, no CRI-O here: /var/lib/kubelet,
  /etc/crio, /run/crio) is created, as the kubelet creates a DirectoryOrCreate
  one, because runc needs its mount point under the read-only /host (without it:
  "mkdir .../rootfs/host/etc/crio: read-only file system", runc 1.1.5). Once the
  container runs they are removed again (forget_created), so this shared machine
  is left as found; removing a directory detaches the mounts on it in other
  mount namespaces (Linux 3.18+), so the pod then sees there what the host sees:
  nothing.
- emptyDir: a tmpfs of the manifest's sizeLimit (medium: Memory), as the kubelet mounts it.
- the source of a HostToContainer mount is made a shared mount of its own
  (HostPaths.propagate_from): systemd makes a node's / shared, this machine's is private.
- the node's / (node_root): where this machine's / is private, a recursive bind of it
  made recursively shared, unmounted with the pod, so that the manifest's
  HostToContainer mount of / can be run and its propagation seen (mount and unmount
  there, not on this machine's /).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cri_exporter.cri import api_pb2 as api
from crilab.containerd import Containerd
from crilab.pods import CONTAINER_NAME, POD_NAME, POD_NAMESPACE, POD_UID, RESTART_COUNT

# Pod template fields with no CRI counterpart on a node without an API server and scheduler.
NOT_TRANSLATED = {
    "serviceAccountName": "no API server; with automountServiceAccountToken false no token is mounted either",
    "nodeSelector": "scheduling", "tolerations": "scheduling",
    "terminationGracePeriodSeconds": "used by StopContainer when the pod is removed",
    "dnsPolicy": "ClusterFirstWithHostNet without a cluster DNS: the kubelet falls back to the node's resolv.conf",
    "enableServiceLinks": "no API server, so no Services whose variables the kubelet could inject",
}
POD_FIELDS = {"automountServiceAccountToken", "hostNetwork", "hostPID", "hostIPC", "securityContext",
              "containers", "volumes", *NOT_TRANSLATED}
CONTAINER_FIELDS = {"name", "image", "imagePullPolicy", "args", "command", "env", "ports", "livenessProbe",
                    "resources", "securityContext", "volumeMounts"}
# The kubelet's constants (pkg/kubelet/cm, qos/policy.go).
MIN_SHARES, SHARES_PER_CPU, QUOTA_PERIOD = 2, 1024, 100000
GUARANTEED_OOM_SCORE_ADJ, BESTEFFORT_OOM_SCORE_ADJ = -997, 1000


def quantity(text: str | int) -> float:
    """A Kubernetes quantity (10m, 80Mi, 1G, 2) as a number."""
    m = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|Ti|k|M|G|T)?", str(text))
    if not m:
        raise ValueError(f"not a quantity this lab knows: {text!r}")
    scale = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}[m.group(2)]
    return float(m.group(1)) * scale


def load_daemonset(path: Path) -> dict:
    return next(d for d in yaml.safe_load_all(Path(path).read_text()) if d and d.get("kind") == "DaemonSet")


def _memtotal() -> int:
    with open("/proc/meminfo") as f:
        return int(next(line for line in f if line.startswith("MemTotal:")).split()[1]) * 1024


def _resolv_conf() -> api.DNSConfig:
    servers, searches, options = [], [], []
    try:
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            words = line.split()
            if words and words[0] == "nameserver":
                servers += words[1:2]
            elif words and words[0] in ("search", "domain"):
                searches = words[1:]
            elif words and words[0] == "options":
                options += words[1:]
    except OSError:
        pass
    return api.DNSConfig(servers=servers, searches=searches, options=options)


def _profile(sc: dict | None) -> api.SecurityProfile | None:
    kind = ((sc or {}).get("seccompProfile") or {}).get("type")
    if kind is None:
        return None
    return api.SecurityProfile(profile_type={"RuntimeDefault": api.SecurityProfile.RuntimeDefault,
                                             "Unconfined": api.SecurityProfile.Unconfined}[kind])


def _propagates(path: str) -> bool:
    """Whether the mount holding `path` is shared or a slave (mountinfo's optional
    fields shared:N / master:N), so that mounts under it reach a HostToContainer mount."""
    real = os.path.realpath(path)
    best, tags = "", []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = fields[4].replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, tags = point, fields[6:fields.index("-")]
    return any(t.startswith(("shared:", "master:")) for t in tags)


@contextlib.contextmanager
def node_root():
    """A node's / for the pod's hostPath /: systemd makes it shared on a node, and
    containerd refuses a HostToContainer mount from a private one. This machine's / is
    used as is where it propagates (CI's systemd machines); where it is private (here)
    and must stay so, it is bound recursively onto a directory of its own, made
    recursively shared: mounts and unmounts made under that directory reach the pod
    as a node's reach it. The copy holds the machine's mounts of its start until it
    is lazily unmounted when the pod goes (as the agent's own recursive bind does).
    Removed with rmdir only: never rm -r a directory the machine's / was bound on."""
    if _propagates("/"):
        yield "/"
        return
    point = tempfile.mkdtemp(prefix="crilab-root-", dir="/tmp")
    try:
        subprocess.run(["mount", "--rbind", "/", point], check=True, capture_output=True)
        try:
            subprocess.run(["mount", "--make-rshared", point], check=True, capture_output=True)
            yield point
        finally:
            subprocess.run(["umount", "-l", point], check=True, capture_output=True)
    finally:
        os.rmdir(point)


@dataclass
class HostPaths:
    """Where this machine keeps what the node keeps at each hostPath (see the module docstring)."""
    stand_ins: dict[str, str]
    scratch: Path
    used: dict[str, str] = field(default_factory=dict)    # hostPath -> what was mounted
    tmpfs: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)     # host directories made for the start, topmost first
    absent: set[str] = field(default_factory=set)        # hostPaths this machine lacks (made, then removed)
    mount_points: list[str] = field(default_factory=list)  # made for a stand-in, removed with the pod
    shared: list[str] = field(default_factory=list)       # made shared mounts for propagation, unmounted with the pod

    def propagate_from(self, host_path: str, volume_path: str) -> None:
        """A HostToContainer (or Bidirectional) mount needs its source on a shared or
        slave mount: containerd refuses it otherwise ("path ... is mounted on ... but
        it is not a shared or slave mount": ensureSharedOrSlave, 1.6 to 2.1). systemd
        makes / shared on every node; this machine's / is private and must stay so,
        so the source is bound onto itself as a shared mount of its own (what it is
        on a node), unmounted with the pod. A hostPath this machine lacks needs a
        stand-in: the directory made for the start is removed once the pod runs,
        which would take the shared mount with it."""
        if volume_path in self.absent:
            raise ValueError(f"hostPath {volume_path} with mount propagation: give it a stand-in "
                             "(this machine lacks it, and its source must stay a shared mount while the pod runs)")
        if _propagates(host_path):
            return
        subprocess.run(["mount", "--bind", host_path, host_path], check=True, capture_output=True)
        self.shared.append(host_path)
        subprocess.run(["mount", "--make-shared", host_path], check=True, capture_output=True)

    def resolve(self, name: str, volume: dict) -> str:
        if "hostPath" in volume:
            hp = volume["hostPath"]
            path: str = self.stand_ins.get(hp["path"], hp["path"])
            if path != hp["path"] and not os.path.exists(hp["path"]):
                # The stand-in's mount point under the read-only /host must exist too
                # (/run/containerd is there whenever a lab shim runs); kept until the pod goes.
                os.makedirs(hp["path"], mode=0o755)
                self.mount_points.append(hp["path"])
            if not os.path.exists(path):
                if hp.get("type") not in ("Directory", "DirectoryOrCreate"):
                    raise ValueError(f"hostPath {hp} absent here and not a directory type")
                top = Path(path)
                while not top.parent.exists():
                    top = top.parent
                os.makedirs(path, mode=0o755)
                self.created.append(str(top))
                self.absent.add(hp["path"])
            self.used[hp["path"]] = path
            return path
        if "emptyDir" in volume:
            ed = volume["emptyDir"]
            path = str(self.scratch / "empty-dir" / name)
            os.makedirs(path, exist_ok=True)
            if ed.get("medium") == "Memory":
                size = int(quantity(ed.get("sizeLimit", "64Mi")))
                subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", path], check=True)
                self.tmpfs.append(path)
            self.used[f"emptyDir:{name}"] = path
            return path
        raise ValueError(f"volume {name}: only hostPath and emptyDir are translated, got {sorted(volume)}")

    def forget_created(self) -> None:
        """Remove the directories made for the start (empty, as made; rmdir, never rm -r)."""
        for top in reversed(self.created):
            for d in sorted((p for p in Path(top).rglob("*") if p.is_dir()), reverse=True):
                d.rmdir()
            Path(top).rmdir()
        self.created.clear()

    def release(self) -> None:
        self.forget_created()
        for path in reversed(self.shared):
            subprocess.run(["umount", "-l", path], capture_output=True)
        self.shared.clear()
        for path in reversed(self.mount_points):
            try:
                os.rmdir(path)
            except OSError:
                pass  # something else (a lab shim's socket dir) uses it now: leave it
        self.mount_points.clear()
        for path in self.tmpfs:
            subprocess.run(["umount", "-l", path], capture_output=True)
        self.tmpfs.clear()


def lab_host_paths(root: str, cd: Containerd, scratch: Path) -> HostPaths:
    """The stand-ins for the DaemonSet's pod on this machine, whose node's / is `root`
    (node_root()) and whose runtime is the lab containerd `cd`: its directory for
    /run/containerd and /etc/containerd, reached through `root`, and an empty directory of
    `scratch` for each HostToContainer hostPath this machine lacks (no kubelet, no CRI-O
    here): the source of a propagating mount must stay a shared mount while the pod runs."""
    base = str(cd.base) if root == "/" else root + str(cd.base)
    stand_ins = {"/": root, "/run/containerd": base, "/etc/containerd": base}
    for host_path, name in (("/var/lib/kubelet", "kubelet"), ("/run/crio", "crio-run")):
        (scratch / name).mkdir(parents=True, exist_ok=True)
        stand_ins[host_path] = str(scratch / name)
    return HostPaths(stand_ins, scratch)


@dataclass
class ManifestPod:
    """The DaemonSet's pod on this node: configs built from the manifest, then run."""
    cd: Containerd
    daemonset: dict
    image: str
    paths: HostPaths
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    sandbox_id: str = ""
    container_ids: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> dict:
        spec: dict = self.daemonset["spec"]["template"]["spec"]
        return spec

    @property
    def name(self) -> str:
        # A DaemonSet's pod: the set's name and five random characters.
        return f"{self.daemonset['metadata']['name']}-{self.uid[:5]}"

    @property
    def namespace(self) -> str:
        namespace: str = self.daemonset["metadata"]["namespace"]
        return namespace

    @property
    def cgroup_parent(self) -> str:
        return f"/kubepods/{self.qos()}/pod{self.uid}"

    def qos(self) -> str:
        """Guaranteed, Burstable or BestEffort, as the kubelet classes the pod."""
        reqs = [(c.get("resources") or {}) for c in self.spec["containers"]]
        if not any(r.get("requests") or r.get("limits") for r in reqs):
            return "besteffort"
        guaranteed = all(
            set((r.get("limits") or {})) >= {"cpu", "memory"}
            and all(quantity(v) == quantity((r.get("limits") or {}).get(k, v)) for k, v in (r.get("requests") or {}).items())
            for r in reqs)
        return "guaranteed" if guaranteed else "burstable"

    def namespaces(self) -> api.NamespaceOption:
        s = self.spec
        return api.NamespaceOption(network=api.NODE if s.get("hostNetwork") else api.POD,
                                   pid=api.NODE if s.get("hostPID") else api.CONTAINER,
                                   ipc=api.NODE if s.get("hostIPC") else api.POD)

    def check_fields(self) -> None:
        unknown = set(self.spec) - POD_FIELDS
        for c in self.spec["containers"]:
            unknown |= {f"{c['name']}.{k}" for k in set(c) - CONTAINER_FIELDS}
        if unknown:
            raise ValueError(f"pod template fields this lab does not translate: {sorted(unknown)}")
        if self.spec.get("automountServiceAccountToken") is not False:
            raise ValueError("a service account token would be mounted: no API server here to make one")

    def sandbox_config(self) -> api.PodSandboxConfig:
        tmpl = self.daemonset["spec"]["template"]
        labels = {**(tmpl["metadata"].get("labels") or {}),
                  POD_NAME: self.name, POD_NAMESPACE: self.namespace, POD_UID: self.uid}
        log_dir = self.cd.base / "logs" / f"{self.namespace}_{self.name}_{self.uid}"
        log_dir.mkdir(parents=True, exist_ok=True)
        sc = api.LinuxSandboxSecurityContext(namespace_options=self.namespaces(),
                                             privileged=any((c.get("securityContext") or {}).get("privileged")
                                                            for c in self.spec["containers"]))
        if (profile := _profile(self.spec.get("securityContext"))) is not None:
            sc.seccomp.CopyFrom(profile)
        return api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=self.name, namespace=self.namespace, uid=self.uid),
            # kubelet generatePodSandboxConfig sets a hostname only off the host network:
            # with one, the pod shares the node's UTS namespace and runc refuses to set one
            # ("unable to set hostname without a private UTS namespace", runc 1.1.5).
            hostname="" if self.spec.get("hostNetwork") else self.name,
            log_directory=str(log_dir), labels=labels,
            annotations=dict(tmpl["metadata"].get("annotations") or {}),
            dns_config=_resolv_conf(),
            linux=api.LinuxPodSandboxConfig(cgroup_parent=self.cgroup_parent, security_context=sc))

    def resources(self, c: dict) -> api.LinuxContainerResources:
        r = c.get("resources") or {}
        req, lim = r.get("requests") or {}, r.get("limits") or {}
        cpu_req = quantity(req.get("cpu", lim.get("cpu", 0)))
        shares = max(MIN_SHARES, int(cpu_req * SHARES_PER_CPU)) if cpu_req else MIN_SHARES
        quota = int(quantity(lim["cpu"]) * QUOTA_PERIOD) if "cpu" in lim else 0
        memory = int(quantity(lim["memory"])) if "memory" in lim else 0
        # qos/policy.go GetContainerOOMScoreAdjust for a burstable container.
        mem_req = quantity(req.get("memory", lim.get("memory", 0)))
        if self.qos() == "guaranteed":
            oom = GUARANTEED_OOM_SCORE_ADJ
        elif self.qos() == "besteffort":
            oom = BESTEFFORT_OOM_SCORE_ADJ
        else:
            oom = int(1000 - (1000 * mem_req) / _memtotal())
            oom = max(oom, 1000 + GUARANTEED_OOM_SCORE_ADJ)
            oom = BESTEFFORT_OOM_SCORE_ADJ - 1 if oom == BESTEFFORT_OOM_SCORE_ADJ else oom
        return api.LinuxContainerResources(cpu_period=QUOTA_PERIOD, cpu_quota=quota, cpu_shares=shares,
                                           memory_limit_in_bytes=memory, oom_score_adj=oom)

    def mounts(self, c: dict) -> list[api.Mount]:
        volumes = {v["name"]: v for v in self.spec.get("volumes") or []}
        # kubelet: recursiveReadOnly IfPossible is recursive only where the runtime's
        # handler says it can (Status.runtime_handlers[].features); 1.6/1.7 say nothing.
        status = self.cd.runtime_stub().Status(api.StatusRequest())
        rro = any(h.features.recursive_read_only_mounts for h in status.runtime_handlers if h.name == "")
        out = []
        for m in c.get("volumeMounts") or []:
            if set(m) - {"name", "mountPath", "readOnly", "recursiveReadOnly", "mountPropagation"}:
                raise ValueError(f"volumeMount fields this lab does not translate: {m}")
            ro = bool(m.get("readOnly"))
            mode = m.get("recursiveReadOnly", "Disabled")
            if mode == "Enabled" and not rro:
                raise ValueError("recursiveReadOnly: Enabled on a runtime without it: the kubelet refuses the pod")
            propagation = {None: api.PROPAGATION_PRIVATE, "None": api.PROPAGATION_PRIVATE,
                           "HostToContainer": api.PROPAGATION_HOST_TO_CONTAINER,
                           "Bidirectional": api.PROPAGATION_BIDIRECTIONAL}[m.get("mountPropagation")]
            if mode in ("Enabled", "IfPossible") and propagation != api.PROPAGATION_PRIVATE:
                # the API server's validation (VolumeMount.recursiveReadOnly, Kubernetes 1.30+)
                raise ValueError(f"recursiveReadOnly {mode} with mountPropagation: the API server refuses the pod: {m}")
            host_path = self.paths.resolve(m["name"], volumes[m["name"]])
            if propagation != api.PROPAGATION_PRIVATE:
                self.paths.propagate_from(host_path, volumes[m["name"]].get("hostPath", {}).get("path", host_path))
            out.append(api.Mount(container_path=m["mountPath"],
                                 host_path=host_path,
                                 readonly=ro, propagation=propagation,
                                 recursive_read_only=ro and mode in ("Enabled", "IfPossible") and rro))
        # What the kubelet adds to every container: the termination log file, and
        # /etc/hosts (for hostNetwork, a copy of the node's).
        pod_dir = self.paths.scratch / "pods" / self.uid
        pod_dir.mkdir(parents=True, exist_ok=True)
        (pod_dir / "termination-log").touch()
        (pod_dir / "etc-hosts").write_bytes(Path("/etc/hosts").read_bytes())
        out.append(api.Mount(container_path="/dev/termination-log", host_path=str(pod_dir / "termination-log")))
        out.append(api.Mount(container_path="/etc/hosts", host_path=str(pod_dir / "etc-hosts")))
        return out

    def container_config(self, c: dict, sandbox: api.PodSandboxConfig) -> api.ContainerConfig:
        sc = c.get("securityContext") or {}
        if set(sc.get("capabilities") or {}) - {"drop", "add"}:
            raise ValueError(f"capabilities fields this lab does not translate: {sc['capabilities']}")
        csc = api.LinuxContainerSecurityContext(
            capabilities=api.Capability(add_capabilities=(sc.get("capabilities") or {}).get("add", []),
                                        drop_capabilities=(sc.get("capabilities") or {}).get("drop", [])),
            privileged=bool(sc.get("privileged")), namespace_options=self.namespaces(),
            readonly_rootfs=bool(sc.get("readOnlyRootFilesystem")),
            # kubelet: allowPrivilegeEscalation false sets no_new_privs.
            no_new_privs=sc.get("allowPrivilegeEscalation") is False)
        if "runAsUser" in sc:
            csc.run_as_user.value = sc["runAsUser"]
        if "runAsGroup" in sc:
            csc.run_as_group.value = sc["runAsGroup"]
        if (profile := _profile(sc) or _profile(self.spec.get("securityContext"))) is not None:
            csc.seccomp.CopyFrom(profile)
        envs = []
        for e in c.get("env") or []:
            if set(e) != {"name", "value"}:
                raise ValueError(f"env entries other than name/value are not translated: {e}")
            envs.append(api.KeyValue(key=e["name"], value=str(e["value"])))
        name = c["name"]
        (Path(sandbox.log_directory) / name).mkdir(parents=True, exist_ok=True)
        return api.ContainerConfig(
            metadata=api.ContainerMetadata(name=name, attempt=0),
            image=api.ImageSpec(image=self.image),
            command=c.get("command") or [], args=c.get("args") or [], envs=envs,
            mounts=self.mounts(c),
            labels={POD_NAME: self.name, POD_NAMESPACE: self.namespace, POD_UID: self.uid, CONTAINER_NAME: name},
            annotations={RESTART_COUNT: "0"},
            log_path=f"{name}/0.log",
            linux=api.LinuxContainerConfig(resources=self.resources(c), security_context=csc))

    def run(self) -> "ManifestPod":
        self.check_fields()
        sandbox = self.sandbox_config()
        rt = self.cd.runtime_stub(timeout=60)
        self.sandbox_id = rt.RunPodSandbox(api.RunPodSandboxRequest(config=sandbox)).pod_sandbox_id
        for c in self.spec["containers"]:
            cid = rt.CreateContainer(api.CreateContainerRequest(
                pod_sandbox_id=self.sandbox_id, config=self.container_config(c, sandbox),
                sandbox_config=sandbox)).container_id
            self.container_ids[c["name"]] = cid
            try:
                rt.StartContainer(api.StartContainerRequest(container_id=cid))
            finally:
                self.paths.forget_created()
        return self

    def container_pid(self, name: str) -> int:
        info = self.cd.runtime_stub().ContainerStatus(
            api.ContainerStatusRequest(container_id=self.container_ids[name], verbose=True)).info["info"]
        return int(json.loads(info)["pid"])

    def exec_sync(self, name: str, cmd: list[str], timeout: int = 120) -> api.ExecSyncResponse:
        """What `kubectl exec` without a tty ends up as on the runtime (ExecSync, argv: no shell)."""
        answer: api.ExecSyncResponse = self.cd.runtime_stub(timeout=timeout + 10).ExecSync(
            api.ExecSyncRequest(container_id=self.container_ids[name], cmd=cmd, timeout=timeout))
        return answer

    def remove(self) -> None:
        if self.sandbox_id:
            rt = self.cd.runtime_stub(timeout=60)
            grace = int(self.spec.get("terminationGracePeriodSeconds", 30))
            for cid in self.container_ids.values():
                rt.StopContainer(api.StopContainerRequest(container_id=cid, timeout=grace))
            rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=self.sandbox_id))
            rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=self.sandbox_id))
            self.sandbox_id = ""
        self.paths.release()
