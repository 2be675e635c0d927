#!/usr/bin/env python3
"""Regenerate cri_exporter/cri/api_pb2*.py from cri_exporter/cri/api.proto.

Run from anywhere; needs grpcio-tools (a test dependency). The generated files
are committed so the agent needs no compiler at install time, and
tests/test_proto_current.py fails when they drift from the .proto.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = "cri_exporter/cri/api.proto"


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc
    import grpc_tools

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


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
