"""A fake CRI runtime (gRPC on a unix socket) with recorded-shape answers, and a
matching cgroup fixture tree, for what a real containerd cannot do here:
thousands of containers, a runtime that hangs on demand, label values a
kubelet would never send, answers beyond gRPC's 4 MiB default.

Shape: what containerd 1.6.20 answers for kubelet-made pods (seen on the
development machine, plus the labels and annotations a kubelet 1.28 sets):
64-hex ids, io.kubernetes.* labels, the kubelet's container annotations,
image references by digest. About 1.1 KiB of ListContainers per container.

Answers are serialized once per change of state, so the fake costs little
CPU of its own while a benchmark measures the agent. Hostile bytes (invalid
UTF-8) can be spliced into a serialized answer with `raw_list_containers`.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from cri_exporter.cri import api_pb2 as api

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "tests" / "fixtures" / "cgroup" / "v1-cgroupfs"
TEMPLATE_POD = "kubepods/burstable/pod22222222-2222-4222-8222-222222222222"
TEMPLATE_CONTAINER = "b" * 64


def _hex(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def _uid(seed: str) -> str:
    h = _hex("uid" + seed)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"


@dataclass
class FakePod:
    sandbox: api.PodSandbox
    containers: list[api.Container]


def make_pod(i: int, containers: int = 2, namespace: str | None = None, name: str | None = None,
             container_names: list[str] | None = None, seed: str = "") -> FakePod:
    """A kubelet-made pod (a Deployment's replica) with `containers` running containers."""
    namespace = namespace if namespace is not None else f"team-{i % 20:02d}"
    name = name if name is not None else f"web-{_hex(seed + str(i))[:10]}-{_hex(seed + 'x' + str(i))[:5]}"
    uid = _uid(seed + str(i))
    sid = _hex(f"sandbox{seed}{i}")
    now = 1_700_000_000_000_000_000 + i * 1_000_000_000
    sandbox = api.PodSandbox(
        id=sid,
        metadata=api.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
        state=api.SANDBOX_READY,
        created_at=now,
        labels={"app": "web", "pod-template-hash": name.rsplit("-", 1)[0][-10:],
                "io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace,
                "io.kubernetes.pod.uid": uid},
        annotations={"kubernetes.io/config.seen": "2024-05-01T10:00:00.000000000Z",
                     "kubernetes.io/config.source": "api"},
        runtime_handler="",
    )
    names = container_names or [("app" if k == 0 else f"sidecar-{k}") for k in range(containers)]
    out = []
    for k, cname in enumerate(names):
        cid = _hex(f"container{seed}{i}/{k}")
        digest = "sha256:" + _hex(f"image{k}")
        out.append(api.Container(
            id=cid,
            pod_sandbox_id=sid,
            metadata=api.ContainerMetadata(name=cname, attempt=0),
            image=api.ImageSpec(image=digest, user_specified_image=f"registry.example.com/team/{cname}:v1.2.3"),
            image_ref=digest,
            image_id=digest,
            state=api.CONTAINER_RUNNING,
            created_at=now + 500_000_000,
            labels={"io.kubernetes.container.name": cname, "io.kubernetes.pod.name": name,
                    "io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.uid": uid},
            annotations={"io.kubernetes.container.hash": "3bc1d8a5", "io.kubernetes.container.restartCount": "0",
                         "io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
                         "io.kubernetes.container.terminationMessagePolicy": "File",
                         "io.kubernetes.pod.terminationGracePeriod": "30",
                         "io.kubernetes.container.ports": '[{"name":"http","containerPort":8080,"protocol":"TCP"}]'},
        ))
    return FakePod(sandbox, out)


def _u64(v: int) -> api.UInt64Value:
    return api.UInt64Value(value=v)


def _container_stats(c: api.Container, n: int) -> api.ContainerStats:
    ts = time.time_ns()
    return api.ContainerStats(
        attributes=api.ContainerAttributes(id=c.id, metadata=c.metadata, labels=c.labels, annotations=c.annotations),
        cpu=api.CpuUsage(timestamp=ts, usage_core_nano_seconds=_u64(10_000_000_000 + n), usage_nano_cores=_u64(0)),
        memory=api.MemoryUsage(timestamp=ts, working_set_bytes=_u64(50 << 20), available_bytes=_u64(0),
                               usage_bytes=_u64(60 << 20), rss_bytes=_u64(40 << 20), page_faults=_u64(12345),
                               major_page_faults=_u64(12)),
        writable_layer=api.FilesystemUsage(timestamp=ts, fs_id=api.FilesystemIdentifier(mountpoint="/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"),
                                           used_bytes=_u64(8192), inodes_used=_u64(4)),
    )


class FakeCRI:
    """A CRI runtime that answers from `self.pods`; start() / stop().

    `hang` makes every call block until it is cleared or the caller gives up;
    `held` does that to the calls of the methods it names, until the name is
    removed (a runtime slow to answer one call); `list_delay` slows the list calls; `fail` maps a method name to a gRPC
    status code to answer with.
    """

    def __init__(self, socket_path: str | os.PathLike, pods: list[FakePod] | None = None, workers: int = 32):
        self.socket_path = str(socket_path)
        self.pods: list[FakePod] = list(pods or [])
        self.hang = threading.Event()
        self.held: set[str] = set()
        self.list_delay = 0.0
        self.fail: dict[str, grpc.StatusCode] = {}
        self.raw_list_containers: bytes | None = None
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._cache: dict[str, bytes] = {}
        self._workers = workers
        self._server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def containers(self) -> list[api.Container]:
        return [c for p in self.pods for c in p.containers]

    def set_pods(self, pods: list[FakePod]) -> None:
        with self._lock:
            self.pods = list(pods)
            self._cache.clear()

    # ---- answers ----

    def _answer(self, method: str, request) -> bytes:
        with self._lock:
            cached = self._cache.get(method)
            if cached is not None:
                return cached
            pods = list(self.pods)
        if method == "ListContainers" and self.raw_list_containers is not None:
            return self.raw_list_containers
        msg: Message
        if method == "Version":
            msg = api.VersionResponse(version="0.1.0", runtime_name="containerd", runtime_version="v1.6.20-fake",
                                      runtime_api_version="v1")
        elif method == "Status":
            msg = api.StatusResponse(status=api.RuntimeStatus(conditions=[
                api.RuntimeCondition(type="RuntimeReady", status=True),
                api.RuntimeCondition(type="NetworkReady", status=True)]))
        elif method == "ListPodSandbox":
            msg = api.ListPodSandboxResponse(items=[p.sandbox for p in pods])
        elif method == "ListContainers":
            msg = api.ListContainersResponse(containers=[c for p in pods for c in p.containers])
        elif method == "ListContainerStats":
            msg = api.ListContainerStatsResponse(stats=[_container_stats(c, n) for n, c in
                                                        enumerate(c for p in pods for c in p.containers)])
        elif method == "ListPodSandboxStats":
            msg = api.ListPodSandboxStatsResponse(stats=[self._pod_stats(p) for p in pods])
        elif method == "ImageFsInfo":
            msg = api.ImageFsInfoResponse(image_filesystems=[api.FilesystemUsage(
                fs_id=api.FilesystemIdentifier(mountpoint="/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"),
                used_bytes=_u64(1 << 30), inodes_used=_u64(20000))])
        elif method == "ListImages":
            msg = api.ListImagesResponse(images=[api.Image(id="sha256:" + _hex("image0"), repo_tags=["registry.example.com/team/app:v1.2.3"], size=50 << 20)])
        else:
            raise KeyError(method)
        data = msg.SerializeToString()
        if not method.endswith("Stats"):  # stats answers carry fresh timestamps
            with self._lock:
                if self.pods == pods:
                    self._cache[method] = data
        return data

    def _pod_stats(self, p: FakePod) -> api.PodSandboxStats:
        ts = time.time_ns()
        return api.PodSandboxStats(
            attributes=api.PodSandboxAttributes(id=p.sandbox.id, metadata=p.sandbox.metadata, labels=p.sandbox.labels),
            linux=api.LinuxPodSandboxStats(
                cpu=api.CpuUsage(timestamp=ts, usage_core_nano_seconds=_u64(20_000_000_000)),
                memory=api.MemoryUsage(timestamp=ts, working_set_bytes=_u64(100 << 20), usage_bytes=_u64(120 << 20),
                                       rss_bytes=_u64(80 << 20)),
                network=api.NetworkUsage(timestamp=ts, default_interface=api.NetworkInterfaceUsage(
                    name="eth0", rx_bytes=_u64(1000), rx_errors=_u64(0), tx_bytes=_u64(2000), tx_errors=_u64(0))),
                process=api.ProcessUsage(timestamp=ts, process_count=_u64(3)),
                containers=[_container_stats(c, 0) for c in p.containers],
            ))

    def _status(self, method: str, request) -> bytes:
        with self._lock:
            pods = list(self.pods)
        if method == "ContainerStatus":
            for p in pods:
                for c in p.containers:
                    if c.id == request.container_id:
                        return api.ContainerStatusResponse(status=api.ContainerStatus(
                            id=c.id, metadata=c.metadata, state=c.state, created_at=c.created_at,
                            started_at=c.created_at + 100_000_000, image=c.image, image_ref=c.image_ref,
                            labels=c.labels, annotations=c.annotations,
                            log_path=log_path(p, c))).SerializeToString()
        elif method == "PodSandboxStatus":
            for p in pods:
                if p.sandbox.id == request.pod_sandbox_id:
                    return api.PodSandboxStatusResponse(status=api.PodSandboxStatus(
                        id=p.sandbox.id, metadata=p.sandbox.metadata, state=p.sandbox.state,
                        created_at=p.sandbox.created_at)).SerializeToString()
        elif method == "PodSandboxStats":
            for p in pods:
                if p.sandbox.id == request.pod_sandbox_id:
                    return api.PodSandboxStatsResponse(stats=self._pod_stats(p)).SerializeToString()
        raise LookupError(f"not found: {request}")

    # ---- gRPC plumbing ----

    # service -> method -> its request message class
    _METHODS: dict[str, dict[str, Any]] = {
        "runtime.v1.RuntimeService": {
            "Version": api.VersionRequest, "Status": api.StatusRequest, "ListPodSandbox": api.ListPodSandboxRequest,
            "ListContainers": api.ListContainersRequest, "ListContainerStats": api.ListContainerStatsRequest,
            "ListPodSandboxStats": api.ListPodSandboxStatsRequest, "ContainerStatus": api.ContainerStatusRequest,
            "PodSandboxStatus": api.PodSandboxStatusRequest, "PodSandboxStats": api.PodSandboxStatsRequest,
        },
        "runtime.v1.ImageService": {"ImageFsInfo": api.ImageFsInfoRequest, "ListImages": api.ListImagesRequest},
    }
    _BY_ID = ("ContainerStatus", "PodSandboxStatus", "PodSandboxStats")

    def _handler(self, method: str):
        def handle(request, context):
            with self._lock:
                self.calls[method] = self.calls.get(method, 0) + 1
            while (self.hang.is_set() or method in self.held) and context.is_active():
                time.sleep(0.02)  # the behaviour under test: a hung runtime, until the client gives up
            if not context.is_active():
                return b""
            code = self.fail.get(method)
            if code is not None:
                context.abort(code, f"fake failure of {method}")
            if self.list_delay and method.startswith("List"):
                time.sleep(self.list_delay)  # the behaviour under test: a slow runtime
            try:
                return self._status(method, request) if method in self._BY_ID else self._answer(method, request)
            except LookupError as err:
                context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        return handle

    def start(self) -> "FakeCRI":
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._workers),
                             options=[("grpc.max_send_message_length", 256 << 20)])
        for service, methods in self._METHODS.items():
            handlers = {
                name: grpc.unary_unary_rpc_method_handler(
                    self._handler(name), request_deserializer=req.FromString, response_serializer=lambda b: b)
                for name, req in methods.items()
            }
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        server.add_insecure_port(self.endpoint)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        self.hang.clear()
        self.held.clear()
        if self._server is not None:
            self._server.stop(grace=0).wait(5)
            self._server = None

    def __enter__(self) -> "FakeCRI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def fleet(containers: int, per_pod: int = 2, seed: str = "") -> list[FakePod]:
    """`containers` containers in pods of `per_pod`."""
    pods, left, i = [], containers, 0
    while left > 0:
        n = min(per_pod, left)
        pods.append(make_pod(i, n, seed=seed))
        left -= n
        i += 1
    return pods


# ---- the matching cgroup tree ----

def _template_files(relative: str) -> dict[str, dict[str, bytes]]:
    """hierarchy -> {file name: content} of one cgroup directory of the v1 fixture."""
    root = TEMPLATE / "sys" / "fs" / "cgroup"
    out: dict[str, dict[str, bytes]] = {}
    for hierarchy in sorted(os.listdir(root)):
        d = root / hierarchy / relative
        if d.is_dir():
            out[hierarchy] = {f.name: f.read_bytes() for f in d.iterdir() if f.is_file()}
    return out


def make_cgroup_tree(host_root: str | os.PathLike, pods: list[FakePod]) -> Path:
    """A cgroup v1 (hybrid, cgroupfs driver) tree under host_root/sys/fs/cgroup for
    these pods, laid out as the kubelet and containerd make it: the files of
    tests/fixtures/cgroup/v1-cgroupfs's burstable pod and container, repeated.
    Returns host_root."""
    host_root = Path(host_root)
    cg = host_root / "sys" / "fs" / "cgroup"
    if cg.exists():
        shutil.rmtree(cg)
    src = TEMPLATE / "sys"
    # top-level files (cgroup.procs of each hierarchy, /sys/dev/block names)
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if path.is_file() and ("kubepods" not in rel.parts):
            dest = host_root / "sys" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
    pod_files = _template_files(TEMPLATE_POD)
    container_files = _template_files(f"{TEMPLATE_POD}/{TEMPLATE_CONTAINER}")
    for n, p in enumerate(pods):
        pod_rel = f"kubepods/burstable/pod{p.sandbox.metadata.uid}"
        sandbox_rel = f"{pod_rel}/{p.sandbox.id}"
        # The sandbox's pause process, as the agent finds it for live pod
        # network counters: its pid in the sandbox cgroup, and under <root>/proc
        # a cgroup file naming the sandbox and a net/dev with lo and eth0.
        pid = 100_000 + n
        sandbox_files = {h: {**files, "cgroup.procs": f"{pid}\n".encode()} for h, files in container_files.items()}
        dirs = [(pod_rel, pod_files)] + [(f"{pod_rel}/{c.id}", container_files) for c in p.containers] + \
               [(sandbox_rel, sandbox_files)]
        for k, (cgroup_rel, files) in enumerate(dirs):
            seed = n * 8 + k
            for hierarchy, contents in files.items():
                d = cg / hierarchy / cgroup_rel
                d.mkdir(parents=True, exist_ok=True)
                for name, data in contents.items():
                    _write(d / name, data if name in _SAME_FOR_ALL else _vary(data, seed))
        proc = host_root / "proc" / str(pid)
        (proc / "net").mkdir(parents=True, exist_ok=True)
        _write(proc / "cgroup", "".join(f"{k}:{h}:/{sandbox_rel}\n" for k, h in enumerate(sorted(container_files), 1)).encode())
        _write(proc / "net" / "dev", _net_dev(n))
    make_log_tree(host_root, pods)
    return host_root


def log_path(p: FakePod, c: api.Container) -> str:
    """Where containerd says the kubelet put a container's log: the sandbox's
    log_directory joined with the container's <name>/<attempt>.log."""
    md = p.sandbox.metadata
    return f"/var/log/pods/{md.namespace}_{md.name}_{md.uid}/{c.metadata.name}/{c.metadata.attempt}.log"


def make_log_tree(host_root: str | os.PathLike, pods: list[FakePod]) -> None:
    """Each container's log under host_root, as the kubelet's rotation leaves
    them (sizes only: the files are sparse): every third container has a
    compressed and an uncompressed rotated file beside its live log."""
    n = 0
    for p in pods:
        for c in p.containers:
            live = Path(host_root) / log_path(p, c).lstrip("/")
            live.parent.mkdir(parents=True, exist_ok=True)
            with open(live, "wb") as f:
                f.truncate(100_000 + 997 * n)
            if n % 3 == 0:
                for suffix, size in ((".20240501-100000.gz", 300_000), (".20240501-110000", 10 * 1024 * 1024 + 4096)):
                    with open(f"{live}{suffix}", "wb") as f:
                        f.truncate(size)
            n += 1


# Limits are often the same for many containers; usage never is.
_SAME_FOR_ALL = frozenset({
    "cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares", "cpu.max", "cpu.weight", "memory.limit_in_bytes",
    "memory.max", "pids.max", "cgroup.procs",
})
_NUMBER = re.compile(rb"(?<![0-9:.])([0-9]{2,})(?![0-9:.])")


def _vary(data: bytes, seed: int) -> bytes:
    """The template's counters, different for every cgroup (as on a node: the
    writer and gzip see distinct values); zeros and device numbers kept."""
    return _NUMBER.sub(lambda m: str(int(m.group(1)) + seed * 7919).encode(), data)


_NET_DEV_HEADER = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
)


def _net_dev(n: int) -> bytes:
    lo = f"    lo: {1000 + n} 10 0 0 0 0 0 0 {1000 + n} 10 0 0 0 0 0 0\n"
    eth0 = f"  eth0: {5_000_000 + n} {4000 + n} {n % 3} {n % 2} 0 0 0 0 {3_000_000 + n} {3000 + n} 0 {n % 5} 0 0 0 0\n"
    return (_NET_DEV_HEADER + lo + eth0).encode()


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def main() -> None:  # pragma: no cover - manual use: python -m tests.fakecri SOCKET N [HOST_ROOT]
    import sys
    sock, n = sys.argv[1], int(sys.argv[2])
    pods = fleet(n)
    if len(sys.argv) > 3:
        make_cgroup_tree(sys.argv[3], pods)
    with FakeCRI(sock, pods):
        print(f"fake CRI with {n} containers on unix://{sock}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()


@contextlib.contextmanager
def fake_node(host_root: Path, containers: int) -> Iterator[FakeCRI]:
    """A node of `containers` containers (fleet()) under host_root: their cgroup tree, and the
    fake runtime serving them at host_root/cri.sock."""
    pods = fleet(containers)
    make_cgroup_tree(host_root, pods)
    with FakeCRI(host_root / "cri.sock", pods) as fake:
        yield fake
