"""cri_exporter/cri/{api,agent}_pb2*.py from cri_exporter/cri/api.proto (a target of `python -m codegen`).

Two modules from the one .proto:

- `api_pb2*`: everything in api.proto, the mutating calls included; for the
  test suite and crilab, which start real pods.
- `agent_pb2*`: the agent's own descriptor, cut from the same file: only the
  read-only RPCs of AGENT_METHODS, only the fields client.py names, only the
  messages and enums those reach. Package, service, message names and field
  numbers stay the protocol's, so it is wire-compatible (protobuf keeps the
  fields it does not know as unknown bytes). Importing it costs the agent
  ~1.3 MB less than api_pb2 (docs/performance.md), and a mutating RPC is not
  in it at all: the agent's stub cannot call one.

The agent's module registers its descriptor in a pool of its own, not in the
default one: a test process imports both, which declare the same names.

Needs grpcio-tools (a test dependency, pinned: its version is written into
the generated code). The generated files are committed so the agent needs no
compiler at install time; tests/test_units.py::test_generated_proto_code_is_current
(api_pb2*) and tests/test_agent_descriptor.py::test_generated_agent_code_is_current
(agent_pb2*, which also follows client.py) fail when they drift. Under protobuf's
pure-Python backend one process cannot load both modules (its symbol database is
keyed by name); the agent loads only agent_pb2, and the project runs upb.
"""
from __future__ import annotations

import ast
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
PROTO = "cri_exporter/cri/api.proto"
FILES = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")
# The agent's descriptor has this name in its pool; no such file exists.
AGENT_PROTO = "cri_exporter/cri/agent.proto"
AGENT_FILES = ("agent_pb2.py", "agent_pb2.pyi", "agent_pb2_grpc.py")
CLIENT = "cri_exporter/cri/client.py"

# Every RPC the agent (exporter, doctor, top) calls, all read-only. A call
# client.py makes that is not here has no method on the stub
# (tests/test_agent_descriptor.py holds the two to each other).
AGENT_METHODS: dict[str, tuple[str, ...]] = {
    "RuntimeService": (
        "Version", "Status", "RuntimeConfig", "ListPodSandbox", "PodSandboxStatus", "ListContainers",
        "ContainerStatus", "ListContainerStats", "PodSandboxStats", "ListPodSandboxStats", "GetContainerEvents",
    ),
    "ImageService": ("ListImages", "ImageFsInfo"),
}

_PRIVATE_POOL = (
    "# The agent's own pool: tests import api_pb2 too, whose names are the same.\n"
    "DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile("
)


def generated_files() -> dict[Path, str]:
    """{path in the repository: text} of the generated code."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        out = Path(tmp) / Path(PROTO).parent
        return {ROOT / Path(PROTO).parent / name: (out / name).read_text() for name in FILES + AGENT_FILES}


def _protoc(args: list[str]) -> None:
    import grpc_tools
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    if protoc.main(["protoc", f"-I{include}", *args]) != 0:
        raise SystemExit("protoc failed")


def generate(out_dir: Path) -> None:
    """protoc's output under `out_dir` (the package path below it): the full
    module, then the agent's from the descriptor cut out of the same file."""
    outs = [f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}"]
    _protoc([f"-I{ROOT}", *outs, str(ROOT / PROTO)])
    full_set = out_dir / "api.pb"
    _protoc([f"-I{ROOT}", f"--descriptor_set_out={full_set}", str(ROOT / PROTO)])
    full = descriptor_pb2.FileDescriptorSet.FromString(full_set.read_bytes()).file[0]
    agent = agent_descriptor(full, names_read_by((ROOT / CLIENT).read_text()))
    agent_set = out_dir / "agent.pb"
    agent_set.write_bytes(descriptor_pb2.FileDescriptorSet(file=[agent]).SerializeToString())
    _protoc([f"--descriptor_set_in={agent_set}", *outs, AGENT_PROTO])
    full_set.unlink()
    agent_set.unlink()
    module = out_dir / AGENT_PROTO.replace(".proto", "_pb2.py")
    text = module.read_text()
    default_pool = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
    if text.count(default_pool) != 1:
        raise SystemExit(f"protoc's {module.name} no longer adds its file to the default pool as expected")
    module.write_text(text.replace(default_pool, _PRIVATE_POOL))


def names_read_by(source: str) -> set[str]:
    """Every name client.py could mean a field by: attributes (r.status),
    keyword arguments (VersionRequest(version=...)) and string constants
    (HasField("linux"), _u64(mem, "rss_bytes")). A field named nowhere there is
    never read nor set, so the agent's descriptor leaves it out; a name that is
    also something else only keeps a field that is not needed."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
    return names


def agent_descriptor(full: descriptor_pb2.FileDescriptorProto, names: set[str]) -> descriptor_pb2.FileDescriptorProto:
    """`full` cut to the methods of AGENT_METHODS, the fields in `names` (all
    fields of map entries) and the types those reach, in the file's order."""
    package = "." + full.package + "."
    messages = {package + m.name: m for m in full.message_type}
    enums = {package + e.name for e in full.enum_type}
    agent = descriptor_pb2.FileDescriptorProto(name=AGENT_PROTO, package=full.package, syntax=full.syntax)
    wanted: list[str] = []
    for service in full.service:
        methods = AGENT_METHODS.get(service.name, ())
        known = {m.name for m in service.method}
        if set(methods) - known:
            raise SystemExit(f"{service.name} in {PROTO} has no {sorted(set(methods) - known)}")
        if not methods:
            continue
        kept = agent.service.add(name=service.name)
        for method in service.method:
            if method.name in methods:
                kept.method.add().CopyFrom(method)
                wanted += [method.input_type, method.output_type]
    reached: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name in reached:
            continue
        reached.add(name)
        if name in enums:
            continue
        if name not in messages:
            raise SystemExit(f"{PROTO}: {name} is neither a message nor an enum of the file")
        entries = {name + "." + n.name: n for n in messages[name].nested_type}  # map entries
        for field in _kept_fields(messages[name], names):
            if field.type_name and field.type_name not in entries:
                wanted.append(field.type_name)
            elif field.type_name:  # a map: its value may be a message
                wanted += [f.type_name for f in entries[field.type_name].field if f.type_name]
    for message in full.message_type:
        if package + message.name in reached:
            kept_message = agent.message_type.add()
            kept_message.CopyFrom(message)
            fields = _kept_fields(message, names)
            del kept_message.field[:]
            kept_message.field.extend(fields)
            used = {f.type_name for f in fields}
            keep_nested = [n for n in message.nested_type if package + message.name + "." + n.name in used]
            del kept_message.nested_type[:]
            kept_message.nested_type.extend(keep_nested)
    for enum in full.enum_type:
        if package + enum.name in reached:
            agent.enum_type.add().CopyFrom(enum)
    for message in agent.message_type:  # protoc's descriptor set carries them, its generated code does not
        for field in [*message.field, *(f for n in message.nested_type for f in n.field)]:
            field.ClearField("json_name")
    return agent


def _kept_fields(message: descriptor_pb2.DescriptorProto, names: set[str]) -> list[descriptor_pb2.FieldDescriptorProto]:
    return [f for f in message.field if f.name in names]
