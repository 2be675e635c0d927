"""The agent's CRI descriptor (cri_exporter/cri/agent_pb2*, cut from api.proto by
codegen/proto.py): read-only by construction, holding every call the agent
makes, wire-compatible with the full one the tests and crilab use."""
from __future__ import annotations

import ast
import filecmp
import subprocess
import sys
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2

from codegen import proto
from cri_exporter.cri import agent_pb2, agent_pb2_grpc, api_pb2, api_pb2_grpc

REPO = Path(__file__).resolve().parent.parent

# Every read-only RPC of runtime.v1 (k8s.io/cri-api v0.34 api.proto): the agent
# may call these and nothing else. An allowlist, so that an RPC added upstream
# is not read-only until someone says so.
READ_ONLY = {
    "RuntimeService": {"Version", "Status", "RuntimeConfig", "ListPodSandbox", "PodSandboxStatus", "ListContainers",
                       "ContainerStatus", "ContainerStats", "ListContainerStats", "PodSandboxStats",
                       "ListPodSandboxStats", "ListMetricDescriptors", "ListPodSandboxMetrics",
                       "GetContainerEvents"},
    "ImageService": {"ListImages", "ImageStatus", "ImageFsInfo"},
}
MUTATING = {"RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "CreateContainer", "StartContainer",
            "StopContainer", "RemoveContainer", "UpdateContainerResources", "ReopenContainerLog", "ExecSync", "Exec",
            "Attach", "PortForward", "UpdateRuntimeConfig", "CheckpointContainer", "UpdatePodSandboxResources",
            "PullImage", "RemoveImage"}
STUB_OF = {"_runtime": "RuntimeService", "_images": "ImageService"}


def _methods(module) -> dict[str, set[str]]:
    return {name: {m.name for m in s.methods} for name, s in module.DESCRIPTOR.services_by_name.items()}


def _calls_in_client() -> dict[str, set[str]]:
    """The RPCs client.py makes: self._call(self._runtime, "Version", ...) and
    self._runtime.GetContainerEvents(...)."""
    calls: dict[str, set[str]] = {"RuntimeService": set(), "ImageService": set()}
    for node in ast.walk(ast.parse((REPO / proto.CLIENT).read_text())):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        func = node.func
        if func.attr == "_call" and len(node.args) >= 2:
            stub, method = node.args[0], node.args[1]
            if isinstance(stub, ast.Attribute) and isinstance(method, ast.Constant):
                calls[STUB_OF[stub.attr]].add(method.value)
        elif isinstance(func.value, ast.Attribute) and func.value.attr in STUB_OF:
            calls[STUB_OF[func.value.attr]].add(func.attr)
    return calls


def test_the_agents_descriptor_has_no_mutating_rpc():
    methods = _methods(agent_pb2)
    assert set(methods) <= set(READ_ONLY)
    for service, names in methods.items():
        assert not names & MUTATING, (service, names & MUTATING)
        assert names <= READ_ONLY[service], (service, names - READ_ONLY[service])
    # The full module, which starts the tests' pods, has them: the cut is what removes them.
    assert _methods(api_pb2)["RuntimeService"] & MUTATING >= {"RunPodSandbox", "CreateContainer", "RemovePodSandbox"}


def test_the_agents_stub_cannot_call_a_mutating_rpc():
    channel = grpc.insecure_channel("unix:///nonexistent/cri.sock")  # never connected: no call is made
    try:
        agent, full = agent_pb2_grpc.RuntimeServiceStub(channel), api_pb2_grpc.RuntimeServiceStub(channel)
        for name in MUTATING:
            assert not hasattr(agent, name), name
        assert hasattr(full, "RunPodSandbox") and hasattr(agent, "ListContainers")
    finally:
        channel.close()


def test_every_rpc_the_agent_calls_is_in_its_descriptor_and_nothing_else():
    calls = _calls_in_client()
    assert len(calls["RuntimeService"]) >= 10 and calls["ImageService"], calls  # the parse found the calls
    assert calls == _methods(agent_pb2)
    assert calls == {s: set(m) for s, m in proto.AGENT_METHODS.items()}


def test_only_the_cri_client_imports_the_generated_code():
    """Every other module reaches the runtime through CriClient; none loads the
    full module (with the mutating calls), nor builds a stub of its own."""
    offenders = []
    for path in (REPO / "cri_exporter").rglob("*.py"):
        rel = path.relative_to(REPO).as_posix()
        if rel == proto.CLIENT or Path(rel).name.startswith(("api_pb2", "agent_pb2")):
            continue
        text = path.read_text()
        for word in ("api_pb2", "agent_pb2", "ServiceStub"):
            if word in text:
                offenders.append(f"{rel}: {word}")
    assert not offenders, offenders


def test_the_agent_loads_its_descriptor_not_the_full_one():
    """Importing every entry point of the agent (serve, doctor, top) leaves api_pb2 unloaded."""
    code = ("import sys, cri_exporter.cli, cri_exporter.exporter, cri_exporter.doctor, cri_exporter.top.command;"
            "print('cri_exporter.cri.api_pb2' in sys.modules, 'cri_exporter.cri.agent_pb2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"], out


def test_every_kept_field_is_the_protocols():
    """Same package, services, method paths and streaming, and each kept field
    with the full file's number, type and label: the wire is the same."""
    agent, full = agent_pb2.DESCRIPTOR, api_pb2.DESCRIPTOR
    assert agent.package == full.package == "runtime.v1"
    for name, service in agent.services_by_name.items():
        for method in service.methods:
            theirs = full.services_by_name[name].methods_by_name[method.name]
            assert method.full_name == theirs.full_name
            assert method.input_type.full_name == theirs.input_type.full_name
            assert method.output_type.full_name == theirs.output_type.full_name
            assert (method.client_streaming, method.server_streaming) == (theirs.client_streaming,
                                                                          theirs.server_streaming)
    compared = 0
    for name, message in agent.message_types_by_name.items():
        ours, theirs = descriptor_pb2.DescriptorProto(), descriptor_pb2.DescriptorProto()
        message.CopyToProto(ours)
        full.message_types_by_name[name].CopyToProto(theirs)
        their_fields = {f.name: f for f in theirs.field}
        for field in ours.field:  # number, type, label (repeated), the message or enum it names, json name
            assert field == their_fields[field.name], f"{name}.{field.name}"
            compared += 1
        their_entries = {n.name: n for n in theirs.nested_type}
        for entry in ours.nested_type:  # map entries, whole
            assert entry == their_entries[entry.name], f"{name}.{entry.name}"
    assert compared > 50
    for name, enum in agent.enum_types_by_name.items():
        assert [(v.name, v.number) for v in enum.values] == [
            (v.name, v.number) for v in full.enum_types_by_name[name].values]


def test_the_cut_leaves_out_what_the_agent_never_reads():
    """Fewer messages than the full file, and the fields nobody reads are gone
    (annotations, filters, timestamps, pressure), so a list answer's
    annotations stay unparsed bytes."""
    agent, full = agent_pb2.DESCRIPTOR, api_pb2.DESCRIPTOR
    assert len(agent.message_types_by_name) < len(full.message_types_by_name)
    for name in ("RunPodSandboxRequest", "ContainerConfig", "PsiStats", "PodSandboxFilter", "ExecSyncRequest"):
        assert name in full.message_types_by_name and name not in agent.message_types_by_name, name
    container = agent.message_types_by_name["Container"].fields_by_name
    assert "annotations" not in container and "labels" in container
    assert "filter" not in agent.message_types_by_name["ListContainersRequest"].fields_by_name


def test_an_answer_of_the_full_protocol_reads_the_same_through_the_cut():
    """Bytes written with every field (as a runtime sends them) parse in the
    agent's message, which keeps the fields it does not know and reads the
    ones it does unchanged."""
    sent = api_pb2.ListContainersResponse(containers=[api_pb2.Container(
        id="c1", pod_sandbox_id="p1", metadata=api_pb2.ContainerMetadata(name="app", attempt=2),
        image=api_pb2.ImageSpec(image="sha256:ab", user_specified_image="busybox", annotations={"a": "b"}),
        image_ref="sha256:ab", state=api_pb2.CONTAINER_RUNNING, created_at=5,
        labels={"io.kubernetes.pod.name": "web"}, annotations={"x" * 10: "y" * 1000}, image_id="sha256:cd")])
    wire = sent.SerializeToString()
    got = agent_pb2.ListContainersResponse.FromString(wire)
    (c,) = got.containers
    assert (c.id, c.pod_sandbox_id, c.metadata.name, c.metadata.attempt, c.image.user_specified_image,
            c.state, c.created_at, dict(c.labels), c.image_id) == (
        "c1", "p1", "app", 2, "busybox", agent_pb2.CONTAINER_RUNNING, 5, {"io.kubernetes.pod.name": "web"}, "sha256:cd")
    assert not hasattr(c, "annotations")
    assert api_pb2.ListContainersResponse.FromString(got.SerializeToString()) == sent  # the unknown fields kept


def test_generated_agent_code_is_current(tmp_path):
    """The agent's module follows api.proto and client.py (`python -m codegen`)."""
    proto.generate(tmp_path)
    for name in proto.AGENT_FILES:
        assert filecmp.cmp(tmp_path / "cri_exporter/cri" / name, REPO / "cri_exporter/cri" / name, shallow=False), (
            f"{name} is stale: run python -m codegen")
