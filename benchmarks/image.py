"""The shipped image: its size, how soon the DaemonSet's pod serves, and its memory at 250 containers.

    .venv/bin/python benchmarks/image.py                # 250 containers
    .venv/bin/python benchmarks/image.py --containers 50

Builds the Dockerfile with crilab.agent_image (cached in ~/.cache/crilab/image),
starts a private real containerd, imports the image under the manifest's
image name and runs deploy/kubernetes/daemonset.yaml's pod through CRI
(crilab.manifest_pod: the manifest's args, user, capabilities, mounts and
memory limit). Measured:
- image size: the layers as a registry stores them (gzip) and unpacked;
- start to first scrape: RunPodSandbox until /metrics answers with every
  collector succeeding (the pod's own start, the agent's imports, the first
  CRI stats snapshot and doctor run);
- resident memory of the agent (VmRSS, VmHWM of its main process) and the
  container's cgroup usage and peak, after scrapes at the ServiceMonitor's
  pace, with the node holding N containers (pods of 4 busybox containers).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from crilab import Containerd, agent_image, run_pod, versions  # noqa: E402
from crilab.manifest_pod import ManifestPod, lab_host_paths, load_daemonset, node_root, quantity  # noqa: E402
from tests.exporter_proc import parse  # noqa: E402

SLEEP = ["sleep", "2147483647"]
PER_POD = 4
COLLECTORS = ("runtime", "containers", "stats", "imagefs", "cgroups", "doctor")


def scrape(port: int):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=15) as r:
        return parse(r.read().decode())


def all_ok(port: int) -> bool:
    try:
        s = scrape(port)
    except OSError:
        return False
    return all(list(s.find("cri_scrape_collector_success", collector=c).values()) == [1.0] for c in COLLECTORS) \
        and bool(s.find("cri_doctor_last_run_timestamp_seconds"))


def wait(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def memory(pod: ManifestPod) -> dict:
    pid = pod.container_pid("cri-exporter")
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    cg = dict(line.split(":", 2)[1:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines())
    if "memory" in cg:
        d = Path(f"/sys/fs/cgroup/memory{cg['memory']}")
        usage, peak = int((d / "memory.usage_in_bytes").read_text()), int((d / "memory.max_usage_in_bytes").read_text())
    else:
        d = Path(f"/sys/fs/cgroup{cg['']}")
        usage, peak = int((d / "memory.current").read_text()), int((d / "memory.peak").read_text())
    kb = lambda k: int(status[k].split()[0]) * 1024  # noqa: E731
    return {"rss": kb("VmRSS"), "hwm": kb("VmHWM"), "cgroup": usage, "cgroup_peak": peak}


def mib(n: float) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=250)
    ap.add_argument("--scrapes", type=int, default=10)
    ap.add_argument("--containerd", default=versions.NAMES[-1], choices=versions.NAMES)
    args = ap.parse_args()
    ds = load_daemonset(REPO / "deploy/kubernetes/daemonset.yaml")
    agent = ds["spec"]["template"]["spec"]["containers"][0]
    port = int(dict(a.partition("=")[::2] for a in agent["args"][1:])["--listen-address"].rsplit(":", 1)[1])
    notes = []
    t = time.monotonic()
    built = agent_image.build()
    notes.append(f"build (crilab.agent_image.build, this run): {time.monotonic() - t:.0f} s")
    size = agent_image.sizes(built.archive)
    base = tempfile.mkdtemp(prefix="crim-", dir="/tmp")
    cd = Containerd(os.path.join(base, "cd"), version=args.containerd).start()
    # The manifest mounts / (and more) with HostToContainer: their sources must be shared
    # mounts, as on a node; node_root() gives a shared copy of this machine's private /.
    node = contextlib.ExitStack()
    paths = lab_host_paths(node.enter_context(node_root()), cd, Path(base) / "scratch")
    pod = None
    try:
        ctr = [str(cd.version.bin_dir() / "ctr"), "-a", cd.socket_path, "-n", "k8s.io"]
        import subprocess
        subprocess.run([*ctr, "images", "import", str(built.archive)], check=True, capture_output=True)
        subprocess.run([*ctr, "images", "tag", built.tag, agent["image"]], check=True, capture_output=True)
        made = pods = 0
        t = time.monotonic()
        while made < args.containers - 1:  # the agent is one of them
            p = run_pod(cd, f"bench-{pods}", f"team-{pods % 20:02d}")
            for k in range(min(PER_POD, args.containers - 1 - made)):
                p.add_container(f"c{k}", SLEEP)
                made += 1
            pods += 1
        notes.append(f"{made} busybox containers in {pods} pods created in {time.monotonic() - t:.0f} s")
        pod = ManifestPod(cd, ds, agent["image"], paths)
        t = time.monotonic()
        pod.run()
        wait(lambda: all_ok(port), 300, "the first scrape with every collector succeeding")
        first = time.monotonic() - t
        s = scrape(port)
        counted = len(s.find("cri_container_info"))
        for _ in range(args.scrapes):
            scrape(port)
            time.sleep(1)
        time.sleep(0.5)
        mem = memory(pod)
        limit = quantity(agent["resources"]["limits"]["memory"])
        request = quantity(agent["resources"]["requests"]["memory"])
    finally:
        if pod is not None:
            pod.remove()
        cd.cleanup()
        paths.release()
        node.close()
        shutil.rmtree(base, ignore_errors=True)
    print("| what | measured |")
    print("|---|---|")
    print(f"| image, compressed (gzip layers + config, as pushed) | {size['compressed_bytes'] / 1e6:.0f} MB |")
    print(f"| image, unpacked ({size['layers']} layers) | {size['unpacked_bytes'] / 1e6:.0f} MB |")
    print(f"| RunPodSandbox to the first scrape with every collector ok | {first:.1f} s |")
    print(f"| containers on the node (cri_container_info) | {counted} |")
    print(f"| agent RSS after {args.scrapes} scrapes (peak) | {mib(mem['rss'])} ({mib(mem['hwm'])}) |")
    print(f"| container's cgroup usage (peak, with the doctor child) | {mib(mem['cgroup'])} "
          f"({mib(mem['cgroup_peak'])}) |")
    print(f"| manifest: request / limit | {mib(request)} / {mib(limit)} |")
    print(f"| containerd | {cd.version.name} |")
    print()
    for n in notes:
        print(f"- {n}")


if __name__ == "__main__":
    main()
