"""cri_exporter/cri/api_pb2*.py from cri_exporter/cri/api.proto (a target of `python -m codegen`).

Needs grpcio-tools (a test dependency, pinned: its version is written into
the generated code). The generated files are committed so the agent needs no
compiler at install time, and tests/test_units.py::test_generated_proto_code_is_current
fails when they drift from the .proto.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = "cri_exporter/cri/api.proto"
FILES = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")


def generated_files() -> dict[Path, str]:
    """{path in the repository: text} of the generated code."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        out = Path(tmp) / Path(PROTO).parent
        return {ROOT / Path(PROTO).parent / name: (out / name).read_text() for name in FILES}


def generate(out_dir: Path) -> None:
    """protoc's output under `out_dir` (the package path below it)."""
    import grpc_tools
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
