"""What one doctor run knows, read lazily and once.

Several checks look at the same file or the same CRI answer; the context
reads each once per run and remembers failures too, so a dead runtime costs
one timeout, not one per check.
"""
from __future__ import annotations

import functools
import os

from cri_exporter.cri.client import CriClient, CriError, resolve_endpoint, socket_path
from cri_exporter.doctor.facts import buildinfo, cni, containerd, crio, kube_proxy, kubelet, packages, procfs, systemd
from cri_exporter.doctor.facts.kubelet import DriverInUse
from cri_exporter.hostfs import HostFS


# Package names of the kubelet and the runtimes in Debian/Ubuntu (pkgs.k8s.io,
# Docker's containerd.io, the distributions' containerd) and RPM distributions.
PACKAGES = ("kubelet", "kubeadm", "containerd", "containerd.io", "cri-o")


class Context:
    def __init__(self, hostfs: HostFS, endpoint: str | None = None, cri_timeout: float = 3.0,
                 netns: str | None = None):
        self.hostfs = hostfs
        self.netns = netns
        self.explicit_endpoint = endpoint
        self.cri_timeout = cri_timeout
        self._cri_calls: dict[str, object] = {}
        self._client: CriClient | None = None
        self._units: dict[str, systemd.Unit] = {}

    # ---- files ----

    @functools.cached_property
    def containerd_location(self) -> containerd.Location:
        """Which config the containerd behind the endpoint was started with."""
        v = self.cri("version")
        version = None if isinstance(v, CriError) or "containerd" not in v.runtime_name.lower() else v.runtime_version
        loc = containerd.locate(self.hostfs, self.runtime_processes, socket_path(self.endpoint), version)
        package = self.packages.get("containerd") or self.packages.get("containerd.io")
        if version is None and package is not None and loc.layout.name in ("default", "custom"):
            # The runtime does not answer: the package's containerd is the one its unit starts
            # (k3s, RKE2 and microk8s bring their own, so their layouts never take it).
            loc = containerd.locate(self.hostfs, self.runtime_processes, socket_path(self.endpoint),
                                    f"{package.major}.{package.minor}.{package.patch}")
            loc.notes.append(f"containerd version from its package: {package}")
        elif version is None and package is None and loc.layout.name in ("default", "custom"):
            # No package either (installed from the release tarball): its binary's build info.
            built, why = self._containerd_binary_version(loc)
            if built is not None:
                loc = containerd.locate(self.hostfs, self.runtime_processes, socket_path(self.endpoint),
                                        f"{built.major}.{built.minor}.{built.patch}")
                loc.notes.append(f"containerd version from its {built.source}: {built.text}")
            elif why:
                loc.notes.append(f"containerd version unknown: {why}")
        return loc

    def _containerd_binary_version(self, loc: containerd.Location) -> tuple[packages.Version | None, str]:
        """The running containerd's executable, else containerd.service's ExecStart, else the usual paths."""
        paths = []
        if loc.process is not None:
            try:
                paths.append(self.hostfs.readlink(f"/proc/{loc.process.pid}/exe"))
            except OSError:
                pass
        argv = systemd.exec_start(self.hostfs, self.unit("containerd.service")) or []
        paths += argv[:1] + ["/usr/local/bin/containerd", "/usr/bin/containerd"]
        path = next((p for p in dict.fromkeys(paths) if os.path.isabs(p) and self.hostfs.is_file(p)), None)
        return buildinfo.containerd_version(self.hostfs, path) if path else (None, "")

    @functools.cached_property
    def containerd(self) -> containerd.ContainerdConfig:
        return self.containerd_location.config

    @functools.cached_property
    def crio_location(self) -> crio.Location:
        return crio.locate(self.hostfs, self.runtime_processes, socket_path(self.endpoint))

    @functools.cached_property
    def crio(self) -> crio.CrioConfig:
        return self.crio_location.config

    @functools.cached_property
    def crio_running(self) -> tuple[dict | None, str]:
        """(the config the running CRI-O reports on its socket, "") or (None, why not)."""
        return crio.running_config(self.hostfs, crio.api_socket(self.crio), timeout=min(self.cri_timeout, 2.0))

    @functools.cached_property
    def cni(self) -> cni.CniConfig | None:
        """The CNI directory this node's runtime loads, None without a runtime."""
        if self.runtime_kind == "containerd":
            cfg = self.containerd
            return cni.load(self.hostfs, cfg.cni_conf_dir(), cfg.cni_bin_dirs(), "containerd config")
        if self.runtime_kind == "crio":
            conf, _ = self.crio.get("crio.network", "network_dir")
            bins, _ = self.crio.get("crio.network", "plugin_dirs")
            return cni.load(self.hostfs, str(conf).rstrip("/") or "/etc/cni/net.d",
                            [str(b).rstrip("/") for b in (bins or [])], "CRI-O config")
        return None

    def unit(self, name: str) -> systemd.Unit:
        """A systemd unit with its drop-ins, read once."""
        if name not in self._units:
            self._units[name] = systemd.read_unit(self.hostfs, name)
        return self._units[name]

    @functools.cached_property
    def kubelet(self) -> kubelet.KubeletSettings:
        return kubelet.load(self.hostfs, self.unit("kubelet.service"),
                            procfs.find_processes(self.hostfs, ("kubelet",)), self.packages.get("kubelet"))

    @functools.cached_property
    def kube_proxy(self) -> kube_proxy.ProxyMode:
        """Whether kube-proxy runs here and in which mode (its flags or config file)."""
        return kube_proxy.read(self.hostfs)

    @functools.cached_property
    def packages(self) -> dict[str, packages.Version]:
        """Versions of the node's Kubernetes and runtime packages (dpkg or rpm)."""
        return packages.installed(self.hostfs, PACKAGES)

    @functools.cached_property
    def cgroups(self) -> procfs.CgroupInfo:
        return procfs.cgroups(self.hostfs)

    @functools.cached_property
    def runtime_processes(self) -> list[procfs.Process]:
        return procfs.find_processes(self.hostfs, ("containerd", "crio"))

    def process(self, comm: str) -> procfs.Process | None:
        """The runtime process behind the endpoint (not merely the first of that name)."""
        return (self.containerd_location if comm == "containerd" else self.crio_location).process

    @functools.cached_property
    def runtime_kind(self) -> str | None:
        """"containerd", "crio" or None: what this node runs, from its config
        files, its processes, or the CRI Version answer."""
        v = self.cri("version")
        if not isinstance(v, CriError):
            name = v.runtime_name.lower()
            if "containerd" in name:
                return "containerd"
            if "cri-o" in name or "crio" in name:
                return "crio"
        comms = {p.comm for p in self.runtime_processes}
        if self.containerd.exists or "containerd" in comms:
            return "containerd"
        if self.crio.exists or "crio" in comms:
            return "crio"
        return None

    @functools.cached_property
    def runtime_version(self) -> tuple[int, int] | None:
        """(major, minor) of the runtime answering CRI, None when unknown."""
        v = self.cri("version")
        if isinstance(v, CriError):
            return None
        digits = v.runtime_version.lstrip("v").split("-")[0].split(".")
        try:
            return int(digits[0]), int(digits[1])
        except (IndexError, ValueError):
            return None

    @functools.cached_property
    def on_node_network(self) -> bool:
        """Whether the doctor's loopback is the node's (run on the node, or a
        hostNetwork pod): its network namespace is that of the host's init."""
        if self.netns is not None:
            return False
        if self.hostfs.root == "/":
            return True
        try:
            return os.stat(self.hostfs.path("/proc/1/ns/net")).st_ino == os.stat("/proc/self/ns/net").st_ino
        except OSError:
            return False

    @functools.cached_property
    def netns_inodes(self) -> tuple[set[int], int]:
        """Every process's network namespace inode, and how many pod processes would not tell."""
        return procfs.netns_inodes(self.hostfs)

    # Landlock denies a confined process ptrace-like access to every process
    # outside its domain, whatever its rules and even as root: /proc/<pid>/ns,
    # exe, cwd, root. The hand-run doctor reads those facts first, then
    # confines itself (confine_doctor.py), so its findings are those of an
    # unconfined run: the kubelet's and kube-proxy's whole facts, every
    # process's network namespace, and the runtimes' links and roots (pinned
    # in HostFS: which runtime serves the endpoint is decided later, after the
    # CRI answers). No CRI call here: grpc's threads must start after.
    PTRACE_FACTS = ("kubelet", "kube_proxy", "netns_inodes", "on_node_network", "runtime_processes")

    def read_before_confinement(self) -> None:
        """Read (and keep) the facts behind PTRACE_FACTS; one that raises is
        left unread, for its check to read (confined) and report."""
        for name in self.PTRACE_FACTS:
            try:
                getattr(self, name)
            except Exception:  # noqa: BLE001 -- the check reading it reports it
                pass
        for p in self.__dict__.get("runtime_processes") or []:
            self.hostfs.pin_process(p.pid)

    @functools.cached_property
    def network(self):
        """NetFacts, or the exception that stopped reading netlink."""
        from cri_exporter.doctor.facts import netlink

        try:
            return netlink.read(self.netns)
        except Exception as e:  # noqa: BLE001 -- pyroute2 raises its own NetlinkError too
            return e

    # ---- CRI ----

    @functools.cached_property
    def endpoint(self) -> str:
        """The flag or CONTAINER_RUNTIME_ENDPOINT as given; else crictl's probe
        order under the host root."""
        endpoint, _ = resolve_endpoint(self.explicit_endpoint, self.hostfs.root, probe_timeout=self.cri_timeout)
        return endpoint

    @property
    def endpoint_if_resolved(self) -> str:
        """The endpoint if a check resolved it, else the one given (never probes)."""
        return self.__dict__.get("endpoint") or self.explicit_endpoint or ""

    @property
    def client(self) -> CriClient:
        if self._client is None:
            self._client = CriClient(self.endpoint, timeout=self.cri_timeout)
        return self._client

    def cri(self, call: str, *args):
        """The memoized answer of a read-only CRI call, or the CriError it raised."""
        key = call + repr(args)
        if key not in self._cri_calls:
            try:
                if call == "status":
                    self._cri_calls[key] = self.client.status(verbose=True)
                else:
                    self._cri_calls[key] = getattr(self.client, call)(*args)
            except CriError as e:
                self._cri_calls[key] = e
        return self._cri_calls[key]

    @functools.cached_property
    def runtime_cgroup_driver(self) -> str | None:
        """The cgroup driver the runtime announces over RuntimeConfig, None when
        it does not (Unimplemented on containerd 1.6.20/1.7.24) or cannot be asked."""
        answer = self.cri("runtime_config")
        return None if isinstance(answer, CriError) else answer.cgroup_driver

    @functools.cached_property
    def kubelet_cgroup_driver(self) -> DriverInUse:
        return kubelet.cgroup_driver_in_use(self.kubelet, self.runtime_cgroup_driver)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self.hostfs.unpin()
