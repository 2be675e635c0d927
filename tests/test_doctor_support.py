"""Shared helpers for the doctor tests (no tests here): fixture trees and a
tiny fake CRI server speaking the project's runtime.v1 subset over a unix
socket, so CRI checks are tested without a real runtime."""
from __future__ import annotations

import json
import os
import shutil
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from cri_exporter.cri import api_pb2 as pb
from cri_exporter.cri import api_pb2_grpc as pb_grpc
from cri_exporter.doctor import run_doctor
from cri_exporter.hostfs import HostFS

FIXTURES = Path(__file__).parent / "fixtures" / "hosts"


def fixture(name: str) -> str:
    return str(FIXTURES / name)


def copy_fixture(name: str, tmp_path) -> Path:
    """A writable copy (for mtimes, sockets and one-line variations)."""
    dest = Path(tmp_path) / "host"
    shutil.copytree(FIXTURES / name, dest, symlinks=True)
    return dest


def write(root, host_path: str, text: str, mode: int | None = None) -> Path:
    p = Path(root) / host_path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    if mode is not None:
        p.chmod(mode)
    return p


def results(root, endpoint: str | None = None, checks=None, skip=None) -> dict:
    """check id -> CheckResult of a doctor run over `root`.

    Without an endpoint the doctor probes sockets under the root; fixture
    trees have none, so CRI calls fail fast."""
    report = run_doctor(HostFS(str(root)), endpoint, checks=checks, skip=skip, cri_timeout=2.0)
    return report.by_id()


def status(root, check_id: str, endpoint: str | None = None) -> str:
    return results(root, endpoint, checks=[check_id])[check_id].status.value


@dataclass
class FakeRuntime:
    """What the fake runtime answers; tests change fields before calling."""

    name: str = "containerd"
    version: str = "v1.7.22"
    api_version: str = "v1"
    runtime_ready: bool = True
    network_ready: bool = True
    network_reason: str = ""
    extra_conditions: list[tuple[str, bool, str, str]] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)
    images: list[tuple[str, bool]] = field(default_factory=lambda: [("registry.k8s.io/pause:3.10", True)])
    sandboxes: list[str] = field(default_factory=lambda: ["aaaa1111"])
    broken_sandboxes: set[str] = field(default_factory=set)
    host_network: set[str] = field(default_factory=set)  # sandboxes whose network namespace is the node's
    serve_runtime: bool = True  # False: like containerd with disabled_plugins = ["cri"]
    # RuntimeConfig: None answers Unimplemented (containerd 1.6/1.7); "systemd"
    # answers an empty `linux {}` as containerd 2.1.9 does (SYSTEMD is the zero value).
    cgroup_driver: str | None = None

    def running_config(self, **cfg) -> None:
        self.info["config"] = json.dumps(cfg)


class _Runtime(pb_grpc.RuntimeServiceServicer):
    def __init__(self, fake: FakeRuntime):
        self.f = fake

    def Version(self, request, context):
        return pb.VersionResponse(version="0.1.0", runtime_name=self.f.name,
                                  runtime_version=self.f.version, runtime_api_version=self.f.api_version)

    def Status(self, request, context):
        conds = [pb.RuntimeCondition(type="RuntimeReady", status=self.f.runtime_ready),
                 pb.RuntimeCondition(type="NetworkReady", status=self.f.network_ready,
                                     reason=self.f.network_reason,
                                     message="" if self.f.network_ready else "cni plugin not initialized")]
        conds += [pb.RuntimeCondition(type=t, status=s, reason=r, message=m) for t, s, r, m in self.f.extra_conditions]
        return pb.StatusResponse(status=pb.RuntimeStatus(conditions=conds),
                                 info=self.f.info if request.verbose else {})

    def RuntimeConfig(self, request, context):
        if self.f.cgroup_driver is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "method RuntimeConfig not implemented")
        driver = pb.CGROUPFS if self.f.cgroup_driver == "cgroupfs" else pb.SYSTEMD
        return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(cgroup_driver=driver))

    def ListPodSandbox(self, request, context):
        return pb.ListPodSandboxResponse(items=[
            pb.PodSandbox(id=i, metadata=pb.PodSandboxMetadata(name=f"pod-{i[:4]}", namespace="default", uid=i),
                          state=pb.SANDBOX_READY) for i in self.f.sandboxes])

    def ListContainers(self, request, context):
        return pb.ListContainersResponse()

    def PodSandboxStatus(self, request, context):
        mode = pb.NODE if request.pod_sandbox_id in self.f.host_network else pb.POD
        return pb.PodSandboxStatusResponse(status=pb.PodSandboxStatus(
            id=request.pod_sandbox_id, state=pb.SANDBOX_READY,
            linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(options=pb.NamespaceOption(network=mode)))))

    def PodSandboxStats(self, request, context):
        if request.pod_sandbox_id in self.f.broken_sandboxes:
            context.abort(grpc.StatusCode.UNKNOWN, "failed to decode sandbox container metrics: cgroupPath is empty")
        return pb.PodSandboxStatsResponse(stats=pb.PodSandboxStats(
            attributes=pb.PodSandboxAttributes(id=request.pod_sandbox_id)))

    def ListPodSandboxStats(self, request, context):
        if self.f.broken_sandboxes:
            context.abort(grpc.StatusCode.UNKNOWN, "failed to decode sandbox container metrics: cgroupPath is empty")
        return pb.ListPodSandboxStatsResponse(stats=[
            pb.PodSandboxStats(attributes=pb.PodSandboxAttributes(id=i)) for i in self.f.sandboxes])


class _Images(pb_grpc.ImageServiceServicer):
    def __init__(self, fake: FakeRuntime):
        self.f = fake

    def ListImages(self, request, context):
        return pb.ListImagesResponse(images=[
            pb.Image(id=f"sha256:{n:064x}", repo_tags=[t], size=700000, pinned=p)
            for n, (t, p) in enumerate(self.f.images)])

    def ImageFsInfo(self, request, context):
        return pb.ImageFsInfoResponse(image_filesystems=[pb.FilesystemUsage(
            timestamp=1, fs_id=pb.FilesystemIdentifier(mountpoint="/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"))])


class _UnknownService(grpc.GenericRpcHandler):
    """Answers like containerd's gRPC server with the CRI plugin disabled
    (containerd 1.6: "unknown service runtime.v1.RuntimeService")."""

    def service(self, handler_call_details):
        service = handler_call_details.method.strip("/").split("/")[0]

        def abort(request, context):
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"unknown service {service}")

        return grpc.unary_unary_rpc_method_handler(abort)


class FakeCriServer:
    """`with FakeCriServer(path) as fake:` serves on unix://path until exit."""

    def __init__(self, socket_path, runtime: FakeRuntime | None = None):
        self.socket_path = str(socket_path)
        self.runtime = runtime or FakeRuntime()
        self.endpoint = "unix://" + self.socket_path

    def __enter__(self) -> FakeRuntime:
        os.makedirs(os.path.dirname(self.socket_path), exist_ok=True)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        if self.runtime.serve_runtime:
            pb_grpc.add_RuntimeServiceServicer_to_server(_Runtime(self.runtime), self.server)
            pb_grpc.add_ImageServiceServicer_to_server(_Images(self.runtime), self.server)
        else:
            self.server.add_generic_rpc_handlers((_UnknownService(),))
        self.server.add_insecure_port(self.endpoint)
        self.server.start()
        return self.runtime

    def __exit__(self, *exc) -> None:
        self.server.stop(grace=None)
