"""crictl is the operator's window into the runtime; a wrong endpoint
sends every debugging session down the wrong path."""
from __future__ import annotations

import os
import stat

from cri_exporter.cri.client import socket_path
from cri_exporter.doctor.facts import crio as crio_facts
from cri_exporter.doctor.facts.containerd import same_socket
from cri_exporter.doctor.facts import crictl as crictl_facts
from cri_exporter.doctor.facts.files import resolve
from cri_exporter.doctor.model import Severity, failed, passed, skipped, warned
from cri_exporter.doctor.registry import check

REF = "https://github.com/kubernetes-sigs/cri-tools/blob/master/docs/crictl.md"
FIX = ("cat > /etc/crictl.yaml <<'EOF'\nruntime-endpoint: {ep}\nimage-endpoint: {ep}\ntimeout: 10\nEOF")
PATH = "/etc/crictl.yaml"
# dockershim (removed from the kubelet in 1.24) and Mirantis cri-dockerd.
DOCKER_SOCKETS = ("dockershim.sock", "cri-dockerd.sock")


def _runtime(ctx) -> tuple[str, str]:
    """(the endpoint crictl should name, the layout line for `seen`)."""
    if ctx.runtime_kind == "crio":
        loc = ctx.crio_location
        return f"unix://{crio_facts.api_socket(ctx.crio)}", f"runtime CRI-O, config from {loc.how}"
    loc = ctx.containerd_location
    return f"unix://{loc.address}", f"layout {loc.layout.name}: containerd on {loc.address}, config {loc.path} ({loc.how})"


def _own_crictl(ctx, layout_line: str):
    """k3s and RKE2 write a crictl.yaml of their own; their crictl reads it."""
    layout = ctx.containerd_location.layout if ctx.runtime_kind == "containerd" else None
    if layout is None or not layout.crictl_config or not ctx.hostfs.exists(layout.crictl_config):
        return None
    data, error = crictl_facts.read(ctx.hostfs, layout.crictl_config)
    if error:
        return None
    use = ("k3s crictl" if layout.name == "k3s" else
           f"CRI_CONFIG_FILE={layout.crictl_config} /var/lib/rancher/{layout.name}/bin/crictl")
    configured = data.get("runtime-endpoint") if isinstance(data, dict) else None
    return passed(f"no {PATH}; {layout.name}'s own crictl ({use}) reads {layout.crictl_config}",
                  seen=f"{layout.crictl_config}: runtime-endpoint {configured}\n{layout_line}")


@check("crictl.endpoint", Severity.INFO)
def endpoint(ctx):
    """/etc/crictl.yaml must name the runtime's socket."""
    ep, layout_line = _runtime(ctx)
    if not ctx.hostfs.exists(PATH):
        own = _own_crictl(ctx, layout_line)
        if own:
            return own
        if crictl_facts.binary(ctx.hostfs) is None:
            # A node without crictl (Debian packages none) has nothing that reads the file.
            return skipped(f"crictl is not installed ({', '.join(crictl_facts.BINARIES)}), so nothing reads {PATH}",
                           seen=f"{PATH} is absent\n{layout_line}")
        return warned(f"no {PATH}", seen=f"{PATH} is absent\n{layout_line}",
                      why="crictl then tries each default socket in turn, prints a deprecation warning and "
                      "may talk to the wrong runtime (e.g. a dockershim leftover).",
                      fix=FIX.format(ep=ep), refs=[REF])
    data, error = crictl_facts.read(ctx.hostfs, PATH)
    if error:
        return failed(f"{PATH} does not parse", seen=f"{error}\n{layout_line}", why="crictl refuses to run.", fix=FIX.format(ep=ep), refs=[REF])
    configured = data.get("runtime-endpoint") if isinstance(data, dict) else None
    if not configured:
        return warned(f"{PATH} sets no runtime-endpoint", seen=f"{PATH}: {data!r}\n{layout_line}",
                      why="crictl falls back to probing default sockets.", fix=FIX.format(ep=ep), refs=[REF])
    sock = socket_path(str(configured))
    if sock is None:
        return passed(f"runtime-endpoint {configured}", seen=layout_line)
    try:
        st = os.stat(resolve(ctx.hostfs, sock))
    except OSError:
        st = None
    if st is None or not stat.S_ISSOCK(st.st_mode):
        return failed(f"crictl's runtime-endpoint {sock} is not a socket that exists",
                      seen=f"runtime-endpoint: {configured} ({PATH})\n{layout_line}",
                      why="Every crictl command fails with \"connect: no such file or directory\".",
                      fix=FIX.format(ep=ep), refs=[REF])
    leftover = next((name for name in DOCKER_SOCKETS if os.path.basename(sock) == name), None)
    if leftover and ctx.runtime_kind in ("containerd", "crio"):
        return warned(f"crictl's runtime-endpoint {sock} is a Docker shim's socket, not this node's {ctx.runtime_kind}",
                      seen=f"runtime-endpoint: {configured} ({PATH})\n{layout_line}",
                      why="A leftover from the node's Docker days: crictl lists the shim's containers (or fails) "
                      "instead of the kubelet's pods, even while that socket still exists.",
                      fix=FIX.format(ep=ep), refs=[REF])
    expected = socket_path(ep)
    if not same_socket(ctx.hostfs, sock, ctx.hostfs.resolve(expected)):
        return warned(f"crictl's runtime-endpoint {sock} is not this node's runtime ({expected})",
                      seen=f"runtime-endpoint: {configured} ({PATH})\n{layout_line}",
                      why="crictl answers from another runtime (another containerd, a leftover Docker one) "
                      "than the one running the kubelet's pods: what it shows is not this node's.",
                      fix=FIX.format(ep=ep), refs=[REF])
    return passed(f"runtime-endpoint {configured}", seen=f"{PATH}\n{layout_line}")
