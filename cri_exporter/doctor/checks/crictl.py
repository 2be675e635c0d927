"""crictl is the operator's window into the runtime; a wrong endpoint
sends every debugging session down the wrong path."""
from __future__ import annotations

import os
import stat

import yaml

from cri_exporter.cri.client import socket_path
from cri_exporter.doctor.facts.files import FileTooLarge, read_config, resolve
from cri_exporter.doctor.model import Severity, failed, passed, warned
from cri_exporter.doctor.registry import check

REF = "https://github.com/kubernetes-sigs/cri-tools/blob/master/docs/crictl.md"
FIX = ("cat > /etc/crictl.yaml <<'EOF'\nruntime-endpoint: {ep}\nimage-endpoint: {ep}\ntimeout: 10\nEOF")


@check("crictl.endpoint", Severity.INFO)
def endpoint(ctx):
    """/etc/crictl.yaml must name the runtime's socket."""
    ep = {"crio": "unix:///var/run/crio/crio.sock"}.get(ctx.runtime_kind, "unix:///run/containerd/containerd.sock")
    path = "/etc/crictl.yaml"
    if not ctx.hostfs.exists(path):
        return warned("no /etc/crictl.yaml", f"{path} is absent",
                      "crictl then tries each default socket in turn, prints a deprecation warning and "
                      "may talk to the wrong runtime (e.g. a dockershim leftover).",
                      FIX.format(ep=ep), [REF])
    try:
        data = yaml.safe_load(read_config(ctx.hostfs, path)) or {}
    except (yaml.YAMLError, OSError, FileTooLarge) as e:
        return failed(f"{path} does not parse", str(e), "crictl refuses to run.", FIX.format(ep=ep), [REF])
    configured = data.get("runtime-endpoint") if isinstance(data, dict) else None
    if not configured:
        return warned(f"{path} sets no runtime-endpoint", f"{path}: {data!r}",
                      "crictl falls back to probing default sockets.", FIX.format(ep=ep), [REF])
    sock = socket_path(str(configured))
    if sock is None:
        return passed(f"runtime-endpoint {configured}")
    try:
        st = os.stat(resolve(ctx.hostfs, sock))
    except OSError:
        st = None
    if st is None or not stat.S_ISSOCK(st.st_mode):
        return failed(f"crictl's runtime-endpoint {sock} is not a socket that exists",
                      f"runtime-endpoint: {configured} ({path})",
                      "Every crictl command fails with \"connect: no such file or directory\".",
                      FIX.format(ep=ep), [REF])
    return passed(f"runtime-endpoint {configured}", f"{path}")
