"""What the exporter costs, measured in one run on one machine, with ratios and targets.

    .venv/bin/python benchmarks/bench.py            # real containerd (10..1000) + fake CRI (100..5000)
    .venv/bin/python benchmarks/bench.py --quick    # smaller: fewer scrapes, real 10 and 50, fake up to 1000
    .venv/bin/python benchmarks/bench.py --containerd 1.6,1.7,2.1   # the real part on each version (default 1.6,2.1)

Real containerd (crilab, needs root), once per version of --containerd
(crilab.versions: 1.6.20 installed, 1.7.24 and 2.1.9 fetched from Debian, each
with its own version's config), one after the other on the same machine so that
the versions' rows compare: pods of 4 busybox containers (the lab's
/24 pod network holds 250 pods: 1,000 containers), the exporter as a
subprocess with every collector but the doctor (measured apart, as shipped),
containerd's own metrics endpoint (`[metrics] address`) as the peer,
containerd's CPU (+ its shims', which do the cgroup reading for stats) from
/proc/<pid>/stat over 10 s windows, less what it burns with nobody asking.
Beyond what this machine holds: tests/fakecri.py (recorded-shape answers) and
a generated cgroup v1 tree passed as --host-root.

The floor: the same CRI list calls and the same cgroup and /proc files
(recorded from one in-process scrape) read bare, no parsing, no metrics, no
exposition.
Scrapes ask for gzip over one kept-alive HTTP/1.1 connection per agent, as Prometheus does.
"""
from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from array import array
from pathlib import Path
from unittest.mock import patch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import structlog  # noqa: E402
import logging  # noqa: E402

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

from prometheus_client.exposition import generate_latest  # noqa: E402

from cri_exporter.cgroups import files as cgfiles  # noqa: E402
from cri_exporter.cri import CriClient  # noqa: E402
from cri_exporter.exposition import AnyFamily, ExpositionWriter, Family  # noqa: E402
from cri_exporter.exporter import Exporter  # noqa: E402
from cri_exporter.hostfs import HostFS  # noqa: E402
from cri_exporter.settings import DEFAULTS, Settings  # noqa: E402
from tests.exporter_proc import ExporterProcess, free_port, parse  # noqa: E402
from tests.fakecri import FakeCRI, fleet, make_cgroup_tree, make_log_tree  # noqa: E402
from floor_read import bare_read  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
LOAD_AT_START = os.getloadavg()[0]
SLEEP = ["sleep", "2147483647"]
REAL_PER_POD = 4
RUNTIME_WINDOW = 10.0  # seconds; containerd's CRI syncs snapshot sizes every 10 s
BENCH_COLLECTORS = ("runtime,containers,terminations,stats,imagefs,cgroups,runtime_processes,"
                    "container_logs")  # all but the doctor, measured apart
# Before issue 15.4: the same without the runtime's own processes, scraped in turn with it.
BEFORE_RUNTIME_PROCESSES = "runtime,containers,terminations,stats,imagefs,cgroups"
# Issue 15's acceptance: the scrape with all of it enabled against the one before it, same
# run, same fleet. Before: without its collectors (terminations, runtime_processes,
# container_logs, container_fds, ephemeral_storage) and without the cAdvisor-parity series it
# added to the containers and cgroup collectors (15.5: CPU user/system, memory peak, pod
# packets and drops), denied by name. Its cgroup files (cpuacct.stat, the peak) are still
# read then: the reading is by file group, not by series.
ISSUE15_ALL = BENCH_COLLECTORS + ",container_fds,ephemeral_storage"
BEFORE_ISSUE15 = "runtime,containers,stats,imagefs,cgroups"
ISSUE15_SERIES = ("cri_(container|pod)_cpu_(user|system)_seconds_total,cri_(container|pod)_memory_max_usage_bytes,"
                  "cri_pod_network_(receive|transmit)_packets(_dropped)?_total")
# The lean profile of docs/metrics.md ("Series budget"), measured beside the default.
from cri_exporter.metric_profiles import LEAN_ALLOW  # noqa: E402
LEAN_ARGS = ("--metrics-allow", LEAN_ALLOW)


# ---------- measuring helpers ----------

def cpu_seconds(pids) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError):
            pass
    return total / CLK


def rss_mb(pid: int) -> tuple[float, float]:
    """(resident MB between scrapes, peak MB). The agent hands a scrape's freed
    heap back just after answering (memory_tuning.release_freed_memory), and
    at Prometheus's intervals that is where it spends nearly all its time:
    the lowest of 3 s of readings after the last answer, as on a loaded
    machine the agent's threads may not have run the release 0.5 s after it
    (one 5,000-container exporter read 80 to 96 MB while busy, 78 MB at rest)."""
    end, rss = time.monotonic() + 3.0, float("inf")
    while True:
        time.sleep(0.25)
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
        rss = min(rss, int(status["VmRSS"].split()[0]) / 1024)
        if time.monotonic() >= end:
            return rss, int(status["VmHWM"].split()[0]) / 1024


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q * (len(v) - 1))))]


# One kept-alive HTTP/1.1 connection per agent (host:port), as Prometheus
# scrapes: until 2026-12 each scrape opened its own (urllib), so the bench never
# saw what a kept-alive connection costs (Nagle's 40 ms a scrape,
# tests/test_http_nodelay.py).
_CONNECTIONS: dict[str, http.client.HTTPConnection] = {}


def fetch(url: str, gz: bool = True) -> tuple[float, bytes, bytes]:
    """(seconds, body as sent, body ungzipped) of one GET over the agent's kept-alive
    connection; a new connection when the server closed the last one (or the agent
    on that port was restarted), the timing that of the attempt that answered."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {"Accept-Encoding": "gzip"} if gz else {}
    for attempt in range(2):
        conn = _CONNECTIONS.get(parts.netloc)
        fresh = conn is None
        if conn is None:
            conn = _CONNECTIONS[parts.netloc] = http.client.HTTPConnection(parts.netloc, timeout=60)
        t = time.perf_counter()
        try:
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            raw = r.read()
        except (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionError):
            conn.close()
            del _CONNECTIONS[parts.netloc]
            if fresh or attempt:
                raise
            continue  # the server closed the kept-alive connection: once more on a new one
        took = time.perf_counter() - t
        if r.status != 200:
            raise RuntimeError(f"GET {url}: HTTP {r.status} {raw[:200]!r}")
        if r.will_close:  # the server said Connection: close; http.client opens anew next time
            conn.close()
        enc = r.getheader("Content-Encoding")
        return took, raw, gzip.decompress(raw) if enc == "gzip" else raw
    raise AssertionError("unreachable")


# The stats collector's families, present once the agent's first background
# stats refresh has finished (collectors/containers.py StatsCollector).
SNAPSHOT_TAKEN = b"\ncri_stats_snapshot_timestamp_seconds "


def warm_up(url: str, timeout: float = 120.0) -> None:
    """Scrape until the agent's first background stats refresh has finished
    (its snapshot's timestamp is served), then once more. Before it, a scrape
    serves no snapshot values (writable layers, process counts) and the agent
    logs "no stats snapshot yet": a measurement then would be of another
    scrape. The first scrape also resolves cgroup paths and fetches statuses."""
    end = time.monotonic() + timeout
    while SNAPSHOT_TAKEN not in fetch(url)[2]:
        if time.monotonic() > end:
            raise RuntimeError(f"{url}: no stats snapshot after {timeout:g} s")
        time.sleep(0.2)  # poll interval of the wait for the first refresh, bounded by `end`
    fetch(url)


def scrape_series(url: str, n: int, pids: list[int]) -> dict:
    warm_up(url)
    times, cpu0 = [], cpu_seconds(pids)
    raw = text = b""
    for _ in range(n):
        took, raw, text = fetch(url)
        times.append(took)
    cpu = (cpu_seconds(pids) - cpu0) / n
    return {"p50": statistics.median(times), "p95": pct(times, 0.95), "cpu": cpu, "gz_bytes": len(raw),
            "bytes": len(text), "text": text}


def series_budget(samples) -> dict:
    """Series per container (those with a `container` label), per pod (a `pod`
    label, no `container`) and per node (the rest), over the containers and
    pods cri_container_info / cri_pod_info name."""
    per = {"container": 0, "pod": 0, "node": 0}
    containers, pods = set(), set()
    for name, labels in samples:
        labels = dict(labels)
        kind = "container" if "container" in labels else "pod" if "pod" in labels else "node"
        per[kind] += 1
        if name == "cri_container_info":
            containers.add((labels["namespace"], labels["pod"], labels["container"]))
        elif name == "cri_pod_info":
            pods.add((labels["namespace"], labels["pod"]))
    return {"series": len(samples), "containers": len(containers), "pods": len(pods),
            "per_container": per["container"] / max(1, len(containers)), "per_pod": per["pod"] / max(1, len(pods)),
            "node": per["node"]}


def lean_row(where: str, n: int, endpoint: str, host_root: str, scrapes: int, log_path: Path, default: dict,
             default_samples, *extra: str) -> dict:
    """The lean profile's scrape time and series beside the default's, same node."""
    exp = ExporterProcess(endpoint, "--host-root", host_root, "--collectors", BENCH_COLLECTORS,
                          "--stats-interval", "3600", *extra, *LEAN_ARGS, log_path=log_path)
    try:
        r = scrape_series(exp.url + "/metrics", scrapes, [exp.proc.pid])
        lean_samples = parse(r.pop("text").decode())
    finally:
        exp.stop()
    return {"where": where, "n": n, "default_p50": default["p50"], "default_cpu": default["cpu"],
            "lean_p50": r["p50"], "lean_cpu": r["cpu"], "default": series_budget(default_samples),
            "lean": series_budget(lean_samples)}


def recorded_files(endpoint: str, host_root: str) -> tuple[list[tuple[str, str]], list[AnyFamily]]:
    """(directory, name) of every cgroup and /proc file one scrape reads, by running one in-process;
    and the families of that scrape."""
    seen: list[tuple[str, str]] = []
    real, real_text = cgfiles.read, HostFS.read_text

    def spy(directory, name):
        seen.append((directory, name))
        return real(directory, name)

    def spy_text(self, host_path, *args, **kwargs):
        seen.append(os.path.split(self.path(host_path)))
        return real_text(self, host_path, *args, **kwargs)

    with patch.object(cgfiles, "read", spy), patch.object(HostFS, "read_text", spy_text):
        exp = Exporter(Settings(runtime_endpoint=endpoint, host_root=host_root,
                                # the floor is what a scrape reads: the runtime_processes walk is off its path
                                collectors=tuple(BEFORE_RUNTIME_PROCESSES.split(",")), stats_interval=3600))
        # Its background parts are not started (their reads are off the scrape path): one
        # stats refresh (CRI calls only), so the scrape serves the snapshot's values as an
        # agent's does, not "no stats snapshot yet".
        if exp.refresher is not None:
            exp.refresher.refresh()
        exp.render()
        seen.clear()
        # One scrape's reads only: until 2026-12 a render and then a scrape
        # were recorded here, two collections, so the floor read every file
        # twice (376 reads at 10 real containers, 188 distinct).
        families = exp.scraper.scrape().metrics
        exp.stop()
    return seen, families


def floor(endpoint: str, paths: list[tuple[str, str]], n: int) -> tuple[float, float]:
    """(p50 seconds, p50 CPU seconds) of the bare work: ListPodSandbox +
    ListContainers, and every recorded file read once. Run in a child process
    (`--floor-child`), so that its CPU time is its own: the fake runtime
    answers from this process, and on a shared machine CPU time, unlike the
    wall clock, hardly moves with the load (compare the agent's CPU a scrape
    with it)."""
    got = floors(endpoint, paths, n)
    return got["p50"], got["cpu"]


def floors(endpoint: str, paths: list[tuple[str, str]], n: int, confined_root: str | None = None) -> dict:
    """The bare floor (p50, cpu) and, with `confined_root`, the confined floor
    (p50_confined, cpu_confined, confinement): the same work in the same child
    right after, once it has confined itself by serve's own Landlock policy for
    that host root (confine.build_policy). Landlock checks every open, so the
    confined floor is what a confined agent cannot go below: read the agent
    against both (docs/performance.md, "Landlock's cost per open")."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir="/tmp") as f:
        json.dump({"endpoint": endpoint, "paths": [f"{d}/{name}" for d, name in paths], "n": n,
                   "confine": confined_root}, f)
        f.flush()
        out = subprocess.run([sys.executable, __file__, "--floor-child", f.name], check=True,
                             capture_output=True, text=True).stdout
    got: dict = json.loads(out.strip().splitlines()[-1])
    return got


def floor_child(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    client = CriClient(spec["endpoint"], timeout=30)
    paths = spec["paths"]

    def bare(n: int) -> tuple[float, float]:
        times, cpus = [], []
        for _ in range(n + 1):
            c, t = time.process_time(), time.perf_counter()
            bare_read(client, paths)
            times.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        return statistics.median(times[1:]), statistics.median(cpus[1:])

    p50, cpu = bare(spec["n"])
    got: dict = {"p50": p50, "cpu": cpu}
    if spec.get("confine"):
        from cri_exporter import confine

        # grpc's threads run already and stay unrestricted ("partial"); the reads are this thread's, which is
        confined = confine.apply(confine.build_policy(spec["confine"]))
        got["confinement"] = f"{confined.state}, ABI {confined.abi}, {confined.rules} rules"
        got["p50_confined"], got["cpu_confined"] = bare(spec["n"])
    client.close()
    print(json.dumps(got))


def exposition_costs(families) -> dict:
    """generate_latest against the caching writer on the same families."""
    class _Reg:
        def collect(self):
            return families

    t = time.perf_counter()
    ref = generate_latest(_Reg())
    gl = time.perf_counter() - t
    w = ExpositionWriter()
    t = time.perf_counter()
    cold = w.write(families)
    cold_t = time.perf_counter() - t
    t = time.perf_counter()
    w.write(families)
    warm_same = time.perf_counter() - t
    # every value changed since the last scrape: the worst case for the line cache
    changed = []
    for f in families:
        if isinstance(f, Family):
            g = Family(f.name, f.documentation, f.labelnames, f.type == "counter")
            g.labelsets = f.labelsets
            g.values = array("d", (v + 1.5 for v in f.values))
        else:
            g = f.__class__.__new__(f.__class__)
            g.__dict__.update(f.__dict__)
            g.samples = [s._replace(value=float(s.value) + 1.5) for s in f.samples]
        changed.append(g)
    t = time.perf_counter()
    w.write(changed)
    warm_changed = time.perf_counter() - t
    assert cold == ref, "exposition differs from generate_latest"
    return {"generate_latest": gl, "cold": cold_t, "warm_same": warm_same, "warm_changed": warm_changed,
            "samples": sum(len(f.samples) for f in families)}


# ---------- real containerd ----------

def run_real(counts: list[int], scrapes: int, budget: float, rows: list, notes: list, version: str,
             lean: list) -> None:
    from crilab import Containerd, run_pod
    from cri_exporter.cri import api_pb2 as api

    base = tempfile.mkdtemp(prefix="crib-", dir="/tmp")
    mport = free_port()
    cd = Containerd(os.path.join(base, "cd"), metrics_address=f"127.0.0.1:{mport}", version=version)
    t = time.monotonic()
    cd.start()
    release = cd.runtime_stub().Version(api.VersionRequest()).runtime_version
    notes.append(f"real containerd {release} started in {time.monotonic() - t:.1f} s (metrics on :{mport})")
    made, pods, created_s = 0, 0, 0.0
    try:
        for target in counts:
            t = time.monotonic()
            while made < target and created_s + (time.monotonic() - t) < budget:
                pod = run_pod(cd, f"bench-{pods}", f"team-{pods % 20:02d}")
                for k in range(min(REAL_PER_POD, target - made)):
                    pod.add_container(f"c{k}", SLEEP)
                    made += 1
                pods += 1
            created_s += time.monotonic() - t
            if any(r["where"] == f"real {version}" and r["n"] == made for r in rows):
                notes.append(f"real {version}: creation budget ({budget:g} s) spent at {made} containers; "
                             f"{target} not measured")
                continue
            notes.append(f"real {version}: {made} containers in {pods} pods, created in {created_s:.1f} s total "
                         f"({created_s / max(1, made):.3f} s a container)")
            exp = ExporterProcess(cd.endpoint, "--host-root", "/", "--collectors", BENCH_COLLECTORS,
                                  "--stats-interval", "3600", log_path=Path(base) / f"exporter-{made}.log")
            try:
                rt_pids = lambda: [cd.pid, *cd.shim_pids()]  # noqa: E731
                r = scrape_series(exp.url + "/metrics", scrapes, [exp.proc.pid])
                rt_idle, rt_scrape, n_rt = runtime_cpu(exp.url + "/metrics", rt_pids)
                notes.append(f"real {version} {made}: containerd and its {len(cd.shim_pids())} shims use {rt_idle * 1000:.0f} ms "
                             f"of CPU a second with nobody asking (their own timers and containerd's 10 s snapshot "
                             f"sync), taken off the runtime CPU figures; {n_rt} scrapes measured")
                r["rss"], r["hwm"] = rss_mb(exp.proc.pid)
                default_samples = parse(r.pop("text").decode())
                series = len(default_samples)
                fl, fl_cpu = floor(cd.endpoint, recorded_files(cd.endpoint, "/")[0], scrapes)
                # peer: containerd's own endpoint over the same containers
                peer_t, peer_bytes = [], 0
                for _ in range(max(5, scrapes // 2)):
                    took, _, body = fetch(f"http://127.0.0.1:{mport}/v1/metrics", gz=False)
                    peer_t.append(took)
                    peer_bytes = len(body)
                # the bare stats calls, as an agent calling them per scrape would
                client = CriClient(cd.endpoint, timeout=60)
                stats_t: list[float] = []
                rt0, t0 = cpu_seconds(rt_pids()), time.monotonic()
                while len(stats_t) < 5 or time.monotonic() - t0 < RUNTIME_WINDOW:
                    t = time.perf_counter()
                    client.list_container_stats()
                    client.list_pod_sandbox_stats()
                    stats_t.append(time.perf_counter() - t)
                rt_stats = max(0.0, cpu_seconds(rt_pids()) - rt0 - rt_idle * (time.monotonic() - t0)) / len(stats_t)
                client.close()
            finally:
                exp.stop()
            lean.append(lean_row(f"real {version}", made, cd.endpoint, "/", scrapes, Path(base) / f"exporter-{made}-lean.log",
                                 r, default_samples))
            r["refresh_cpu"] = refresh_cpu(cd.endpoint, "/", Path(base) / f"exporter-{made}-idle.log")
            r["rtproc"] = runtime_process_cost(cd.endpoint, Path(base), made, scrapes)
            if made == 1000:
                r["rss_default"] = default_config_rss(cd.endpoint, Path("/"), Path(base))
            rows.append({"where": f"real {version}", "n": made, **r, "series": series, "floor": fl, "floor_cpu": fl_cpu,
                         "peer_p50": statistics.median(peer_t), "peer_bytes": peer_bytes,
                         "stats_p50": statistics.median(stats_t), "rt_scrape": rt_scrape, "rt_stats": rt_stats})
    finally:
        t = time.monotonic()
        cd.cleanup()
        shutil.rmtree(base, ignore_errors=True)
        notes.append(f"real containerd {version} cleaned up in {time.monotonic() - t:.1f} s")
        del api


def runtime_process_cost(endpoint: str, base: Path, made: int, scrapes: int) -> dict:
    """The runtime_processes collector's price: scrape p50 with and without it
    (two agents scraped in turn, so both see the same load), and its walk of
    /proc (wall and CPU time, processes read) at the shipped interval."""
    from cri_exporter.runtime_processes import RuntimeProcesses

    reader = RuntimeProcesses(HostFS("/"), lambda: endpoint)
    walls, cpus = [], []
    for _ in range(10):
        t, c = time.perf_counter(), time.process_time()
        sample = reader.read()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    a = ExporterProcess(endpoint, "--host-root", "/", "--collectors", BEFORE_RUNTIME_PROCESSES,
                        "--stats-interval", "3600", log_path=base / f"exporter-{made}-before.log")
    b = ExporterProcess(endpoint, "--host-root", "/", "--collectors", BENCH_COLLECTORS,
                        "--stats-interval", "3600", log_path=base / f"exporter-{made}-after.log")
    try:
        for url in (a.url, b.url):
            warm_up(url + "/metrics")
        # B's agent CPU includes its background walks (every 15 s) while measured
        paired = scrape_in_turn(a, b, scrapes, "runtime_processes")
    finally:
        a.stop()
        b.stop()
    walk_cpu = statistics.median(cpus)
    return {**paired, "walk_ms": statistics.median(walls), "walk_cpu": walk_cpu, "processes": sample.processes,
            "shims": len(sample.shims), "cpu_per_min": walk_cpu * 60 / DEFAULTS.runtime_process_interval}


def scrape_in_turn(a: ExporterProcess, b: ExporterProcess, scrapes: int, collector: str) -> dict:
    """A (without `collector`) and B (with it) scraped in turn, so both see the
    same load: each one's scrape p50 and agent CPU a scrape, and B's own time
    in `collector`."""
    ta, tb, own = [], [], []
    ca, cb = cpu_seconds([a.proc.pid]), cpu_seconds([b.proc.pid])
    for _ in range(scrapes):
        ta.append(fetch(a.url + "/metrics")[0])
        took, _, text = fetch(b.url + "/metrics")
        tb.append(took)
        own.append(parse(text.decode()).get1("cri_scrape_collector_duration_seconds", collector=collector))
    return {"before_p50": statistics.median(ta), "after_p50": statistics.median(tb),
            "cpu_before": (cpu_seconds([a.proc.pid]) - ca) / scrapes,
            "cpu_after": (cpu_seconds([b.proc.pid]) - cb) / scrapes, "collector_p50": statistics.median(own)}


def container_logs_cost(counts: list[int], scrapes: int) -> list[dict]:
    """The container_logs collector's price on a fake fleet with its log tree
    (tests/fakecri.make_log_tree: every container's live log, every third
    with a compressed and an uncompressed rotated file): one round of the
    sampler in this thread (CRI lists, ContainerStatus of every container the
    first time, lstat and a directory listing per container; thread CPU, so
    the fake runtime's own threads are not counted), and the scrape p50 and
    agent CPU of two exporters scraped in turn, with and without the
    collector (the one with it does its rounds in the background meanwhile)."""
    from cri_exporter.pod_logs import ContainerLogSampler

    without = ",".join(c for c in BENCH_COLLECTORS.split(",") if c != "container_logs")
    out = []
    base = Path(tempfile.mkdtemp(prefix="logsb-", dir="/tmp"))
    try:
        for n in counts:
            root = base / f"root{n}"
            pods = fleet(n)
            make_cgroup_tree(root, pods)
            with FakeCRI(base / f"cri{n}.sock", pods) as fake:
                client = CriClient(fake.endpoint, timeout=60)
                sampler = ContainerLogSampler(HostFS(str(root)), client, 3600.0, timeout=60.0)
                rounds = []
                for _ in range(6):
                    t, c = time.perf_counter(), time.thread_time()
                    sampler.sample()
                    rounds.append((time.perf_counter() - t, time.thread_time() - c))
                client.close()
                latest = sampler.latest
                assert latest is not None and sampler.last_error is None and len(latest.logs) == n, sampler.last_error
                files = latest.files
                first, steady = rounds[0], rounds[1:]
                wall = statistics.median(r[0] for r in steady)
                cpu = statistics.median(r[1] for r in steady)
                r = {"n": n, "first_wall": first[0], "first_cpu": first[1], "wall": wall, "cpu": cpu, "files": files,
                     "cpu_per_min": cpu * 60 / DEFAULTS.container_log_interval}
                if n <= 1000:
                    a = ExporterProcess(fake.endpoint, "--host-root", str(root), "--collectors", without,
                                        "--stats-interval", "3600", "--scrape-timeout", "30",
                                        log_path=base / f"exporter-{n}-without.log")
                    b = ExporterProcess(fake.endpoint, "--host-root", str(root), "--collectors", BENCH_COLLECTORS,
                                        "--stats-interval", "3600", "--scrape-timeout", "30",
                                        log_path=base / f"exporter-{n}-with.log")
                    try:
                        for url in (a.url, b.url):
                            fetch(url + "/metrics")
                            fetch(url + "/metrics")
                        r.update(scrape_in_turn(a, b, scrapes, "container_logs"))
                    finally:
                        a.stop()
                        b.stop()
                out.append(r)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


def container_logs_lines(logs: list[dict]) -> list[str]:
    out = []
    for c in logs:
        line = (f"- container_logs at {c['n']} fake containers ({c['files']} log files): one round off the scrape path "
                f"{ms(c['wall'])} wall, {ms(c['cpu'])} CPU (the first, with a ContainerStatus per container: "
                f"{ms(c['first_wall'])}, {ms(c['first_cpu'])} CPU), every {DEFAULTS.container_log_interval:g} s: "
                f"{ms(c['cpu_per_min'])} CPU a minute, {c['files'] / c['wall']:.0f} files a second while stat'ing")
        if "after_p50" in c:
            grow = c["after_p50"] / c["before_p50"] - 1
            line += (f"; scrape p50 {ms(c['after_p50'])} with it, {ms(c['before_p50'])} without ({grow * 100:+.1f}%, "
                     f"< +10%) [{mark(grow < 0.10)}]; agent CPU a scrape {ms(c['cpu_after'])} with it (its rounds "
                     f"included), {ms(c['cpu_before'])} without; the collector's own time in the scrape "
                     f"{ms(c['collector_p50'])} (p50)")
        out.append(line)
    return out


# ---------- fake CRI at scale ----------

def run_fake(counts: list[int], scrapes: int, rows: list, notes: list, expo: list, lean: list) -> None:
    base = Path(tempfile.mkdtemp(prefix="fakeb-", dir="/tmp"))
    try:
        _run_fake(base, counts, scrapes, rows, notes, expo, lean)
    finally:
        shutil.rmtree(base, ignore_errors=True)  # the 5,000-container tree alone is over 1 GB


def _run_fake(base: Path, counts: list[int], scrapes: int, rows: list, notes: list, expo: list, lean: list) -> None:
    for n in counts:
        root = base / f"root{n}"
        pods = fleet(n)
        t = time.monotonic()
        make_cgroup_tree(root, pods)
        notes.append(f"fake {n}: cgroup tree of {len(pods)} pods made in {time.monotonic() - t:.1f} s")
        with FakeCRI(base / f"cri{n}.sock", pods) as fake:
            k = scrapes if n <= 1000 else max(5, scrapes // 3)
            exp = ExporterProcess(fake.endpoint, "--host-root", str(root), "--collectors", BENCH_COLLECTORS,
                                  "--stats-interval", "3600", "--scrape-timeout", "30", "--runtime-timeout", "20",
                                  log_path=base / f"exporter-{n}.log")
            try:
                r = scrape_series(exp.url + "/metrics", k, [exp.proc.pid])
                r["rss"], r["hwm"] = rss_mb(exp.proc.pid)
                text = r.pop("text")
                default_samples = parse(text.decode())
                series = len(default_samples)
            finally:
                exp.stop()
            lean.append(lean_row("fake", n, fake.endpoint, str(root), k, base / f"exporter-{n}-lean.log", r,
                                 default_samples, "--scrape-timeout", "30", "--runtime-timeout", "20"))
            r["refresh_cpu"] = refresh_cpu(fake.endpoint, str(root), base / f"exporter-{n}-idle.log")
            if n == 1000:
                r["rss_default"] = default_config_rss(fake.endpoint, root, base)
            paths, families = recorded_files(fake.endpoint, str(root))
            fl, fl_cpu = floor(fake.endpoint, paths, k)
            expo.append({"n": n, **exposition_costs(families), "text": text if n == 1000 else None})
            rows.append({"where": "fake", "n": n, **r, "series": series, "floor": fl, "floor_cpu": fl_cpu})


def terminations_cost(counts: list[int], rounds: int = 20) -> list[dict]:
    """The termination tracker on a fake fleet's real inventory (FakeCRI through
    CriClient): a steady poll (nothing exited), a poll where 1% of the containers
    exited since the last (their ContainerStatus answered from memory: one call
    each on a real node), and the tracker's memory once it holds the fleet."""
    import tracemalloc

    from cri_exporter.cri import model
    from cri_exporter.inventory import Inventory
    from cri_exporter.terminations import TerminationTracker

    out = []
    base = Path(tempfile.mkdtemp(prefix="termb-", dir="/tmp"))
    try:
        for n in counts:
            with FakeCRI(base / f"cri{n}.sock", fleet(n)) as fake:
                client = CriClient(fake.endpoint, timeout=30)
                pods, containers = client.list_pod_sandboxes(), client.list_containers()
                client.close()
            tracemalloc.start()
            tracker = TerminationTracker()
            tracker.observe(Inventory(pods, containers), lambda cid: None)  # the baseline
            held = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            steady = []
            for _ in range(rounds):
                inv = Inventory(pods, containers)
                t = time.perf_counter()
                tracker.observe(inv, lambda cid: None)
                steady.append(time.perf_counter() - t)
            churn, exits = [], max(1, n // 100)
            finished = int((time.time() - 3600) * 1e9)
            for r in range(min(rounds, 100 // max(1, exits * 100 // n))):
                batch = containers[r * exits:(r + 1) * exits]
                statuses = {c.id: model.ContainerStatus(c.id, "exited", 1, finished, 1, "Error", "") for c in batch}
                for c in batch:
                    c.state = "exited"
                inv = Inventory(pods, containers)
                t = time.perf_counter()
                tracker.observe(inv, statuses.get)
                churn.append(time.perf_counter() - t)
            counted = sum(v for *_, v in tracker.snapshot())
            out.append({"n": n, "steady": statistics.median(steady), "churn": statistics.median(churn),
                        "exits": exits, "counted": counted, "held": held})
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


FAKE_FDS, FAKE_SOCKETS, FAKE_TCP_LINES = 24, 4, 30  # per container process; per pod namespace


def add_fake_proc(root: Path, pods) -> None:
    """Under the fake tree's <root>/proc: one process per container (its pid in
    the container's cgroup.procs) with FAKE_FDS fd links, FAKE_SOCKETS of them
    sockets, and its limits; tcp and tcp6 of FAKE_TCP_LINES sockets for each
    sandbox's process (which make_cgroup_tree made)."""
    cg = root / "sys" / "fs" / "cgroup"
    line = ("{i:4d}: 0100007F:{port:04X} 0100007F:1F90 {st} 00000000:00000000 00:00000000 00000000     0        0 "
            "{ino} 1 0000000000000000 20 4 30 10 -1\n")
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    for n, p in enumerate(pods):
        sandbox = root / "proc" / str(100_000 + n) / "net"
        states = ("01", "01", "06", "0A", "08")
        tcp = header + "".join(line.format(i=i, port=30000 + i, st=states[i % 5], ino=i) for i in range(FAKE_TCP_LINES))
        (sandbox / "tcp").write_text(tcp)
        (sandbox / "tcp6").write_text(header)
        for k, c in enumerate(p.containers):
            pid = 200_000 + n * 8 + k
            for d in cg.glob(f"*/kubepods/burstable/pod{p.sandbox.metadata.uid}/{c.id}"):
                (d / "cgroup.procs").write_text(f"{pid}\n")
            proc = root / "proc" / str(pid)
            (proc / "fd").mkdir(parents=True, exist_ok=True)
            (proc / "limits").write_text("Limit                     Soft Limit           Hard Limit           Units     \n"
                                         "Max open files            1048576              1048576              files     \n")
            for i in range(FAKE_FDS):
                os.symlink(f"socket:[{i}]" if i < FAKE_SOCKETS else f"/app/data/{i}", proc / "fd" / str(i))


# The fake node's runtime, as runtime_processes.py finds it under <root>/proc: a
# containerd serving the socket FakeCRI listens on, one shim a pod.
FAKE_RUNTIME_SOCKET = "/run/containerd/containerd.sock"
FAKE_DAEMON_PID, FAKE_SHIM_PID, FAKE_OTHER_PROCESSES = 1000, 300_000, 150
FAKE_SHIM = "/usr/bin/containerd-shim-runc-v2"


def _stat_line(pid: int, comm: str, ppid: int, threads: int, start: int, rss: int, ticks: int = 0) -> str:
    f = ["S", ppid, 0, 0, 0, 0, 0, 0, 0, 0, 0, ticks, ticks // 3, 0, 0, 20, 0, threads, 0, start, 0, rss]
    return f"{pid} ({comm}) " + " ".join(map(str, f)) + " 0 0 0\n"


def _fake_process(root: Path, pid: int, comm: str, ppid: int, argv: list[str] | None = None, threads: int = 1,
                  rss: int = 200, fds: int = 0, ticks: int = 0) -> None:
    """/proc/<pid> of one process under the fake tree: stat, and for the runtime's
    own (argv given) cmdline, status, statm, limits and `fds` fd entries."""
    d = root / "proc" / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "stat").write_text(_stat_line(pid, comm, ppid, threads, 1000 + pid % 997, rss, ticks))
    if argv is None:
        return
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    uid = os.geteuid()
    (d / "status").write_text(f"Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nNSpid:\t{pid}\n")
    (d / "statm").write_text(f"{rss * 4} {rss} 500 100 0 {rss} 0\n")
    (d / "limits").write_text("Limit                     Soft Limit           Hard Limit           Units     \n"
                              "Max open files            1048576              1048576              files     \n")
    (d / "fd").mkdir(exist_ok=True)
    for i in range(fds):
        (d / "fd" / str(i)).touch()


def add_fake_runtime(root: Path, pods) -> Path:
    """The runtime's own processes under the fake tree's <root>/proc, so that the
    runtime_processes collector finds its daemon and shims (by name, command line
    and the socket's owner, as on a node) and the bench pays its walk: a containerd
    (its config naming FAKE_RUNTIME_SOCKET), a containerd-shim-runc-v2 a pod
    (-namespace k8s.io -id <sandbox>) parent of the pod's pause process and of
    its containers' processes (add_fake_proc's pids), and FAKE_OTHER_PROCESSES
    other processes of the node. Returns where FakeCRI is to listen: the socket
    the daemon names, under the root (the agent's endpoint, as in the DaemonSet)."""
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "stat").write_text(f"cpu  1 2 3 4 5 6 7 0 0 0\nbtime {int(time.time()) - 86400}\n")
    conf = root / "etc" / "containerd" / "config.toml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(f'version = 2\n\n[grpc]\n  address = "{FAKE_RUNTIME_SOCKET}"\n')
    _fake_process(root, 1, "systemd", 0, ["/sbin/init"], fds=0)
    for i in range(FAKE_OTHER_PROCESSES):
        _fake_process(root, 2000 + i, f"worker{i % 7}", 1)
    _fake_process(root, FAKE_DAEMON_PID, "containerd", 1, ["/usr/bin/containerd"], threads=60, rss=60_000,
                  fds=30 + 3 * len(pods), ticks=500_000)
    for n, p in enumerate(pods):
        shim = FAKE_SHIM_PID + n
        _fake_process(root, shim, "containerd-shim", 1,
                      [FAKE_SHIM, "-namespace", "k8s.io", "-id", p.sandbox.id, "-address", FAKE_RUNTIME_SOCKET],
                      threads=11, rss=3000, fds=12, ticks=300)
        _fake_process(root, 100_000 + n, "pause", shim)
        for k, _ in enumerate(p.containers):
            _fake_process(root, 200_000 + n * 8 + k, "sleep", shim)
    sock = root / FAKE_RUNTIME_SOCKET.lstrip("/")
    sock.parent.mkdir(parents=True, exist_ok=True)
    return sock


def fds_cost(counts: list[int], scrapes: int) -> list[dict]:
    """The container_fds collector's price on a fake fleet with a fake /proc
    (add_fake_proc): agent CPU and p50 a scrape with it and without (two agents
    scraped in turn, its sampler's first pass done before measuring), and the
    sampler's pass off the scrape path (wall, CPU, entries) at the shipped
    interval and budget."""
    from cri_exporter.cgroups import NodeCgroups
    from cri_exporter.container_fds import FdSampler

    out = []
    base = Path(tempfile.mkdtemp(prefix="fdsb-", dir="/tmp"))
    try:
        for n in counts:
            root = base / f"root{n}"
            pods = fleet(n)
            make_cgroup_tree(root, pods)
            add_fake_proc(root, pods)
            with FakeCRI(add_fake_runtime(root, pods), pods) as fake:
                hostfs = HostFS(str(root))
                sampler = FdSampler(hostfs, NodeCgroups(hostfs), 0.0, DEFAULTS.fd_sample_budget)
                client = CriClient(fake.endpoint, timeout=30)
                listed, pod_list = client.list_containers(), client.list_pod_sandboxes()
                client.close()
                uids = {p.id: p.k8s_uid for p in pod_list}
                sampler.set_targets({c.id: uids[c.pod_sandbox_id] for c in listed}, dict(uids))
                walls, cpus = [], []
                for _ in range(5):
                    t, c = time.perf_counter(), time.thread_time()
                    sampler.run_pass()
                    walls.append(time.perf_counter() - t)
                    cpus.append(time.thread_time() - c)
                sample = sampler.sample()
                common = ("--host-root", str(root), "--stats-interval", "3600", "--scrape-timeout", "30",
                          "--runtime-timeout", "20", "--fd-sample-interval", "3600")
                a = ExporterProcess(fake.endpoint, "--collectors", BENCH_COLLECTORS, *common,
                                    log_path=base / f"exporter-{n}-nofds.log")
                b = ExporterProcess(fake.endpoint, "--collectors", BENCH_COLLECTORS + ",container_fds", *common,
                                    log_path=base / f"exporter-{n}-fds.log")
                try:
                    for url in (a.url, b.url):
                        warm_up(url + "/metrics")
                    wait_until = time.monotonic() + 60  # the first pass, woken by the first scrape's targets
                    while time.monotonic() < wait_until:
                        got = parse(fetch(b.url + "/metrics")[2].decode())
                        if got.get1("cri_fd_sampler_pending") == 0:
                            break
                        time.sleep(0.5)
                    series = sum(len(got.find(f)) for f in ("cri_container_file_descriptors", "cri_container_sockets",
                                                            "cri_container_file_descriptors_limit_ratio",
                                                            "cri_pod_tcp_connections"))
                    paired = scrape_in_turn(a, b, scrapes, "container_fds")
                    rss_b = rss_mb(b.proc.pid)[0]
                finally:
                    a.stop()
                    b.stop()
            shutil.rmtree(root, ignore_errors=True)
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            out.append({"n": n, **paired, "pass_wall": wall, "pass_cpu": cpu, "entries": sample.last_pass_entries,
                        "cpu_per_min": cpu * 60 / DEFAULTS.fd_sample_interval, "series": series, "rss": rss_b})
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


def fds_report(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        grow = r["cpu_after"] / r["cpu_before"] - 1
        out.append(f"- container_fds at {r['n']} fake containers ({FAKE_FDS} fds, {FAKE_SOCKETS} sockets a container, "
                   f"{FAKE_TCP_LINES} TCP sockets a pod; {r['series']} fd and TCP series): agent CPU a scrape "
                   f"{ms(r['cpu_after'])} with it, {ms(r['cpu_before'])} without ({grow * 100:+.1f}%); scrape p50 "
                   f"{ms(r['after_p50'])} with it, {ms(r['before_p50'])} without; the collector's own time in the "
                   f"scrape {ms(r['collector_p50'])} (p50); RSS with it {r['rss']:.0f} MB. Its sampler off the scrape "
                   f"path: a pass of {r['entries']} entries {ms(r['pass_wall'])} ({ms(r['pass_cpu'])} CPU), "
                   f"{r['entries'] / r['pass_wall']:.0f} entries a second while reading; every "
                   f"{DEFAULTS.fd_sample_interval:g} s that is {ms(r['cpu_per_min'])} CPU a minute")
    return out


def issue15_cost(n: int, scrapes: int) -> dict:
    """Issue 15's acceptance at `n` fake containers: two agents scraped in turn,
    one with everything issue 15 added (ISSUE15_ALL) and one as before it
    (BEFORE_ISSUE15, its series denied), on one fleet with logs and a /proc of
    fds and TCP sockets (add_fake_proc), and the floor measured right after.
    The background samplers' first rounds are done before measuring and their
    next ones are an hour away: their cost off the scrape path has its own lines."""
    base = Path(tempfile.mkdtemp(prefix="i15b-", dir="/tmp"))
    try:
        root = base / "root"
        pods = fleet(n)
        make_cgroup_tree(root, pods)
        add_fake_proc(root, pods)
        with FakeCRI(add_fake_runtime(root, pods), pods) as fake:
            common = ("--host-root", str(root), "--stats-interval", "3600", "--scrape-timeout", "30",
                      "--runtime-timeout", "20", "--fd-sample-interval", "3600", "--container-log-interval", "3600",
                      "--runtime-process-interval", "3600", "--ephemeral-storage-interval", "3600")
            a = ExporterProcess(fake.endpoint, "--collectors", BEFORE_ISSUE15, "--metrics-deny", ISSUE15_SERIES, *common,
                                log_path=base / "exporter-before.log")
            b = ExporterProcess(fake.endpoint, "--collectors", ISSUE15_ALL, *common, log_path=base / "exporter-all.log")
            try:
                for url in (a.url, b.url):
                    warm_up(url + "/metrics")
                wait_until = time.monotonic() + 60  # the fd sampler's first pass, woken by the first scrape's targets
                while time.monotonic() < wait_until:
                    got = parse(fetch(b.url + "/metrics")[2].decode())
                    if got.get1("cri_fd_sampler_pending") == 0 and got.find("cri_container_log_bytes"):
                        break
                    time.sleep(0.5)  # poll interval
                fetch(a.url + "/metrics")
                paired = scrape_in_turn(a, b, scrapes, "containers")
                series_before = len(parse(fetch(a.url + "/metrics")[2].decode()))
                series_all = len(parse(fetch(b.url + "/metrics")[2].decode()))
            finally:
                a.stop()
                b.stop()
            fl, fl_cpu = floor(fake.endpoint, recorded_files(fake.endpoint, str(root))[0], scrapes)
        return {"n": n, **paired, "floor": fl, "floor_cpu": fl_cpu, "series_before": series_before,
                "series_all": series_all}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def issue15_lines(r: dict) -> list[str]:
    grow = r["cpu_after"] / r["cpu_before"] - 1
    return [f"- the scrape with all of issue 15 at {r['n']:,} fake containers ({r['series_all']} series, "
            f"{r['series_before']} before it) within 10% of the scrape before it, in agent CPU a scrape: "
            f"{ms(r['cpu_after'])} ({r['cpu_after'] / r['floor_cpu']:.2f}x the floor's {ms(r['floor_cpu'])}) against "
            f"{ms(r['cpu_before'])} ({r['cpu_before'] / r['floor_cpu']:.2f}x): {r['cpu_after'] / r['cpu_before']:.3f}x "
            f"({grow * 100:+.1f}%) [{mark(grow <= 0.10)}]; scrape p50 {ms(r['after_p50'])} against "
            f"{ms(r['before_p50'])}"]


# Issue 15's memory target: every collector (the doctor apart: a child process), its readers' rounds sped up.
ALL_BUT_DOCTOR = ",".join(name for name in DEFAULTS.collectors if name != "doctor")
ISSUE15_RSS_MB = 80
ISSUE15_INTERVALS = ("--container-log-interval", "5", "--fd-sample-interval", "5",
                     "--ephemeral-storage-interval", "10", "--runtime-process-interval", "5")
EMPTYDIR_FILES = 20  # a pod's emptyDir: 20 small files in 4 directories (ephemeral_cost's common pod)


def add_emptydirs(root: Path, pods) -> None:
    """Under the fake tree, the kubelet's emptyDir of each pod (the logs are make_log_tree's)."""
    from cri_exporter.ephemeral_storage import EMPTY_DIR

    payload = b"x" * 700
    for p in pods:
        vols = root / "var/lib/kubelet/pods" / p.sandbox.metadata.uid / "volumes" / EMPTY_DIR / "data"
        for v in range(EMPTYDIR_FILES):
            d = vols / f"d{v // 5}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{v}").write_bytes(payload)


def issue15_memory(n: int, scrapes: int = 10, gap: float = 3.0) -> dict:
    """Resident memory with every collector enabled but the doctor, at `n` fake
    containers with everything the background readers read: cgroups and pause
    processes (make_cgroup_tree), logs with rotated files (make_log_tree), a
    /proc of fds and TCP sockets (add_fake_proc), an emptyDir a pod. The
    readers run every 5-10 s instead of 15-60 s, so that the scrapes (one every
    `gap` s) see several rounds of each: what a round leaves behind shows."""
    base = Path(tempfile.mkdtemp(prefix="i15b-", dir="/tmp"))
    try:
        root = base / "root"
        pods = fleet(n)
        t = time.monotonic()
        make_cgroup_tree(root, pods)
        make_log_tree(root, pods)
        add_fake_proc(root, pods)
        add_emptydirs(root, pods)
        sock = add_fake_runtime(root, pods)
        made = time.monotonic() - t
        with FakeCRI(sock, pods) as fake:
            exp = ExporterProcess(fake.endpoint, "--host-root", str(root), "--collectors", ALL_BUT_DOCTOR,
                                  "--stats-interval", "3600", "--scrape-timeout", "30", "--runtime-timeout", "20",
                                  *ISSUE15_INTERVALS, log_path=base / "exporter.log")
            try:
                cpu0, t0 = cpu_seconds([exp.proc.pid]), time.monotonic()
                text = b""
                for _ in range(scrapes):
                    _, _, text = fetch(exp.url + "/metrics")
                    time.sleep(gap)  # the readers' rounds between scrapes, as between Prometheus's
                rss, hwm = rss_mb(exp.proc.pid)
                cpu = cpu_seconds([exp.proc.pid]) - cpu0
                samples = parse(text.decode())
                failed = sorted(dict(k[1])["collector"] for k, v in samples.find("cri_scrape_collector_success").items()
                                if v == 0)
            finally:
                exp.stop()
        shims = sum(v for k, v in samples.find("cri_runtime_shims").items())
        return {"n": n, "rss": rss, "hwm": hwm, "series": len(samples), "failed": failed, "made": made,
                "cpu_per_s": cpu / (time.monotonic() - t0), "scrapes": scrapes, "gap": gap, "shims": shims}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def issue13_memory(n: int = 5000, scrapes: int = 5, agent_src: str | None = None, keep_tree: str | None = None) -> dict:
    """Issue 13's memory target alone: RSS of `serve` with bench.py's collectors (every
    collector but the doctor) at `n` fake containers, as the full run's fake row
    measures it (same flags, `scrapes` scrapes back to back, the lowest RSS over 3 s
    after the last answer), plus the RSS before the first scrape (modules and
    start-up heap). `agent_src`: run the agent from another source tree (a
    `git archive` of main) to compare back to back; `keep_tree`: build the cgroup
    tree there once and reuse it (it is over 1 GB at 5,000 containers)."""
    base = Path(tempfile.mkdtemp(prefix="i13b-", dir="/tmp"))
    try:
        root = Path(keep_tree) if keep_tree else base / "root"
        pods = fleet(n)
        if not (root / "sys").exists():
            make_cgroup_tree(root, pods)
        env = {"PYTHONPATH": agent_src} if agent_src else None
        if agent_src:  # its bytecode too, as bytecode_as_shipped() writes this tree's
            subprocess.run([sys.executable, "-m", "compileall", "-q", "cri_exporter"], check=True, cwd=agent_src)
        with FakeCRI(base / "cri.sock", pods) as fake:
            exp = ExporterProcess(fake.endpoint, "--host-root", str(root), "--collectors", BENCH_COLLECTORS,
                                  "--stats-interval", "3600", "--scrape-timeout", "30", "--runtime-timeout", "20",
                                  env=env, log_path=base / "exporter.log")
            try:
                started, _ = rss_mb(exp.proc.pid)
                cpu0 = cpu_seconds([exp.proc.pid])
                for _ in range(scrapes):
                    fetch(exp.url + "/metrics")
                cpu = (cpu_seconds([exp.proc.pid]) - cpu0) / scrapes
                rss, hwm = rss_mb(exp.proc.pid)
            finally:
                exp.stop()
        return {"n": n, "rss": rss, "hwm": hwm, "started": started, "cpu": cpu, "scrapes": scrapes,
                "src": agent_src or str(REPO), "load": (LOAD_AT_START, os.getloadavg()[0])}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def issue13_memory_line(r: dict) -> str:
    return (f"- resident memory < 64 MB at {r['n']:,} containers (fake): {r['rss']:.1f} MB (peak {r['hwm']:.0f}) "
            f"[{mark(r['rss'] < 64)}] (before the first scrape {r['started']:.1f} MB; {r['scrapes']} scrapes, "
            f"agent CPU {r['cpu'] * 1000:.0f} ms a scrape; agent from {r['src']}; "
            f"load {r['load'][0]:.1f} -> {r['load'][1]:.1f})")


def issue15_memory_line(r: dict) -> str:
    failed = f"; collectors failing: {', '.join(r['failed'])}" if r["failed"] else ""
    return (f"- issue 15: RSS at {r['n']:,} fake containers with every collector enabled (doctor apart: "
            f"{ALL_BUT_DOCTOR}) < {ISSUE15_RSS_MB} MB: {r['rss']:.1f} MB (peak {r['hwm']:.0f}) "
            f"[{mark(r['rss'] < ISSUE15_RSS_MB)}] ({r['scrapes']} scrapes {r['gap']:g} s apart, log/fd/runtime-process "
            f"rounds every 5 s, an ephemeral walk every 10 s; {r['series']} series; the fake runtime's daemon and "
            f"{r['shims']:.0f} shims found; agent CPU "
            f"{r['cpu_per_s'] * 100:.0f}% of a core meanwhile{failed})")


def runtime_cpu(url: str, pids, seconds: float = RUNTIME_WINDOW) -> tuple[float, float, int]:
    """(the runtime's CPU seconds a second when nobody asks, its CPU seconds per
    scrape, scrapes measured). /proc/<pid>/stat counts in 10 ms ticks and
    containerd syncs snapshot sizes every 10 s on its own, so both are taken
    over whole windows of that length: a quiet one, then scrapes back to back."""
    c0, t0 = cpu_seconds(pids()), time.monotonic()
    time.sleep(seconds)
    idle = (cpu_seconds(pids()) - c0) / (time.monotonic() - t0)
    c0, t0, n = cpu_seconds(pids()), time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        fetch(url)
        n += 1
    busy = cpu_seconds(pids()) - c0 - idle * (time.monotonic() - t0)
    return idle, max(0.0, busy) / n, n


def refresh_cpu(endpoint: str, host_root: str, log_path: Path) -> float:
    """Agent CPU seconds per background stats refresh (plus idling): an upper
    bound, measured with a refresh every second and no scrapes."""
    exp = ExporterProcess(endpoint, "--host-root", host_root, "--collectors", BENCH_COLLECTORS,
                          "--stats-interval", "1", log_path=log_path)
    try:
        time.sleep(2.5)
        cpu0 = cpu_seconds([exp.proc.pid])
        time.sleep(4)
        return (cpu_seconds([exp.proc.pid]) - cpu0) / 4
    finally:
        exp.stop()


def default_config_rss(endpoint: str, root: Path, base: Path) -> tuple[float, float]:
    """RSS (and peak) of the agent as shipped: every collector, the doctor
    included (it runs at start, then every --doctor-interval; its modules stay
    loaded), after the doctor's first run and 10 scrapes."""
    exp = ExporterProcess(endpoint, "--host-root", str(root), "--scrape-timeout", "30", "--runtime-timeout", "20",
                          log_path=base / "exporter-default.log")
    try:
        for _ in range(120):
            _, _, text = fetch(exp.url + "/metrics")
            if b"\ncri_doctor_last_run_timestamp_seconds " in text:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("the doctor never ran")
        for _ in range(10):
            fetch(exp.url + "/metrics")
        return rss_mb(exp.proc.pid)
    finally:
        exp.stop()


# ---------- report ----------

def ms(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 10 else f"{s:.1f} s"


def mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report(rows, expo, gz, notes, args, lean=(), term=(), logs=(), ephemeral=None, issue15=None,
           memory15=None) -> str:
    out = []
    cpu = platform.processor() or ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except StopIteration:
        pass
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    out.append(f"Machine: {cpu}, {os.cpu_count()} cores, {mem} GiB, Linux {platform.release()}, "
               f"Python {platform.python_version()}; cgroup v1 hybrid (real); tmpfs-less /tmp fixture tree (fake)")
    # Others may share the machine: wall times move with its load, CPU times and RSS hardly.
    load = os.getloadavg()
    out.append(f"Load average (1 min) at the start {LOAD_AT_START:.1f}, at the end {load[0]:.1f} (15 min: {load[2]:.1f}), "
               f"on {os.cpu_count()} cores")
    out.append("")
    out.append("| source | containers | scrape p50 | p95 | floor p50 | scrape/floor | agent CPU/scrape | floor CPU | CPU/floor CPU | RSS (peak) | series | series/container | bytes (gzip) |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        out.append(f"| {r['where']} | {r['n']} | {ms(r['p50'])} | {ms(r['p95'])} | {ms(r['floor'])} | "
                   f"{r['p50'] / r['floor']:.1f}x | {ms(r['cpu'])} | {ms(r['floor_cpu'])} | {r['cpu'] / r['floor_cpu']:.2f}x | "
                   f"{r['rss']:.0f} MB ({r['hwm']:.0f}) | "
                   f"{r['series']} | {r['series'] / r['n']:.1f} | {r['bytes'] / 1e6:.2f} MB ({r['gz_bytes'] / 1e6:.2f} MB) |")
    real = [r for r in rows if r["where"].startswith("real")]
    if real:
        out.append("")
        out.append("| real | containers | ours p50 | containerd /v1/metrics p50 | ours/peer | peer bytes | bare ListContainerStats+ListPodSandboxStats | containerd CPU per our scrape | containerd CPU per stats pair | ratio |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in real:
            ratio = r["rt_scrape"] / r["rt_stats"] if r["rt_stats"] else float("nan")
            out.append(f"| {r['where'].split()[1]} | {r['n']} | {ms(r['p50'])} | {ms(r['peer_p50'])} | {r['p50'] / r['peer_p50']:.2f} | "
                       f"{r['peer_bytes'] / 1e6:.2f} MB | {ms(r['stats_p50'])} | {ms(r['rt_scrape'])} | {ms(r['rt_stats'])} | {ratio:.3f} |")
    versions = sorted({r["where"] for r in real})
    if len(versions) > 1:  # the versions side by side, and how the newest compares with the oldest
        old, new = versions[0], versions[-1]
        by_n = {(r["where"], r["n"]): r for r in real}
        out.append("")
        out.append(f"| containers | scrape p50 {old} / {new} | agent CPU/scrape | containerd /v1/metrics p50 | "
                   f"bare stats pair p50 | containerd CPU per stats pair | containerd CPU per our scrape | "
                   f"stats pair {new}/{old} |")
        out.append("|---|---|---|---|---|---|---|---|")
        for n in sorted({n for (_, n) in by_n}):
            a, b = by_n.get((old, n)), by_n.get((new, n))
            if a and b:
                out.append(f"| {n} | {ms(a['p50'])} / {ms(b['p50'])} | {ms(a['cpu'])} / {ms(b['cpu'])} | "
                           f"{ms(a['peer_p50'])} / {ms(b['peer_p50'])} | {ms(a['stats_p50'])} / {ms(b['stats_p50'])} | "
                           f"{ms(a['rt_stats'])} / {ms(b['rt_stats'])} | {ms(a['rt_scrape'])} / {ms(b['rt_scrape'])} | "
                           f"{b['stats_p50'] / a['stats_p50']:.2f} |")
    if lean:
        out.append("")
        out.append("Series budget: the default against the lean profile (docs/metrics.md), same node, same run. "
                   "Series per container carry a `container` label, per pod a `pod` label and no `container`, "
                   "per node neither.")
        out.append("")
        out.append("| source | containers | pods | profile | scrape p50 | agent CPU/scrape | series | per container | per pod | per node |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in lean:
            for profile in ("default", "lean"):
                b = r[profile]
                out.append(f"| {r['where']} | {b['containers']} | {b['pods']} | {profile} | {ms(r[profile + '_p50'])} | "
                           f"{ms(r[profile + '_cpu'])} | {b['series']} | {b['per_container']:.1f} | {b['per_pod']:.1f} | "
                           f"{b['node']} |")
    if expo:
        out.append("")
        out.append("| containers | samples | generate_latest | writer, first scrape | writer, same values | writer, every value changed | speed-up (changed) |")
        out.append("|---|---|---|---|---|---|---|")
        for e in expo:
            out.append(f"| {e['n']} | {e['samples']} | {ms(e['generate_latest'])} | {ms(e['cold'])} | {ms(e['warm_same'])} | "
                       f"{ms(e['warm_changed'])} | {e['generate_latest'] / e['warm_changed']:.1f}x |")
    if term:
        out.append("")
        out.append("| containers (terminations tracker) | poll, nothing exited | poll, 1% newly exited | exits a poll | tracker memory |")
        out.append("|---|---|---|---|---|")
        for t in term:
            out.append(f"| {t['n']} | {ms(t['steady'])} | {ms(t['churn'])} (+1 ContainerStatus each) | {t['exits']} | "
                       f"{t['held'] / 1e6:.2f} MB |")
    if gz:
        out.append("")
        out.append("| gzip level (1,000 containers' text) | time | size | ratio |")
        out.append("|---|---|---|---|")
        for level, t, size, plain in gz:
            out.append(f"| {level} | {ms(t)} | {size / 1e6:.2f} MB | {plain / size:.1f}x |")

    # targets
    out.append("")
    out.append("Targets (issue 7):")
    by = {(r["where"], r["n"]): r for r in rows}
    wheres = [*versions, "fake"]
    for where in versions:
        r50 = by.get((where, 50))
        if r50:
            out.append(f"- scrape p50 at 50 real containers ({where}) < 25 ms: {ms(r50['p50'])} "
                       f"[{mark(r50['p50'] < 0.025)}]")
    # The background refresh: one stats pair per --stats-idle-interval while cgroups
    # and pod namespaces give every usage value live: 15/300 of a pair per 15 s scrape.
    refresh = 15 / DEFAULTS.stats_idle_interval
    for r in real:
        ratio = r["rt_scrape"] / r["rt_stats"] if r["rt_stats"] else float("nan")
        total = ratio + refresh
        out.append(f"- runtime CPU at {r['n']} real containers ({r['where']}) < 1/10 of per-scrape stats calls: {ratio:.3f} on the "
                   f"scrape path + {refresh:.3f} for the background refresh every {DEFAULTS.stats_idle_interval:g} s "
                   f"= {total:.3f} at a 15 s scrape interval [{mark(total < 0.1)}]")
    for r in real:
        c = r.get("rtproc")
        if c:
            grow = c["after_p50"] / c["before_p50"] - 1
            out.append(f"- runtime_processes at {r['n']} real containers ({r['where']}, {c['shims']} shims, {c['processes']} processes "
                       f"on the machine): scrape p50 {ms(c['after_p50'])} with it, {ms(c['before_p50'])} without "
                       f"({grow * 100:+.1f}%, < +10%) [{mark(grow < 0.10)}]; agent CPU a scrape {ms(c['cpu_after'])} "
                       f"with it (its background walks included), {ms(c['cpu_before'])} without; the collector's "
                       f"own time in the scrape {ms(c['collector_p50'])} (p50); its walk of /proc off the scrape path "
                       f"{ms(c['walk_ms'])} ({ms(c['walk_cpu'])} CPU) every {DEFAULTS.runtime_process_interval:g} s: "
                       f"{ms(c['cpu_per_min'])} CPU a minute, {c['processes'] / c['walk_ms']:.0f} processes a second "
                       f"while walking")
    out.extend(container_logs_lines(list(logs)))
    for where in wheres:
        r1k = by.get((where, 1000))
        if r1k:
            ok = r1k["p50"] < 3 * r1k["floor"] and r1k["p50"] < 0.25
            out.append(f"- 1,000 containers ({where}): p50 {ms(r1k['p50'])} < 250 ms and < 3x floor "
                       f"({r1k['p50'] / r1k['floor']:.1f}x) [{mark(ok)}]")
    if rows:
        out.append("- resident memory < 80 MB (between scrapes; peak in the table): "
                   + ", ".join(f"{r['where']} {r['n']}: {r['rss']:.0f} MB" for r in rows)
                   + f" [{mark(all(r['rss'] < 80 for r in rows))}]")
    for where in wheres:
        r1k = by.get((where, 1000))
        if r1k and "rss_default" in r1k:
            rss, hwm = r1k["rss_default"]
            out.append(f"- as shipped (every collector; the doctor runs in a child process), 1,000 containers "
                       f"({where}): {rss:.0f} MB (peak {hwm:.0f}) [{mark(rss < 80)}]")
    for where in wheres:
        r250 = by.get((where, 250))
        if r250:
            per15 = r250["cpu"] + r250["refresh_cpu"]
            out.append(f"- 250 containers ({where}) at a 15 s interval < 1% of a core: ({ms(r250['cpu'])} a scrape + "
                       f"{ms(r250['refresh_cpu'])} a stats refresh) / 15 s = {per15 / 15 * 100:.2f}% "
                       f"[{mark(per15 / 15 < 0.01)}]")
    out.append("")
    out.append("Targets (issue 13: the shared cgroup reading owned by the scrape):")
    for where in ("real", "fake"):
        mine = [r for r in rows if r["where"].split()[0] == where]
        if mine:
            out.append(f"- scrape p50 <= 1.5x the floor at every size ({where}): "
                       + ", ".join(f"{r['where'].split(' ', 1)[1] + ' ' if ' ' in r['where'] else ''}{r['n']}: "
                                   f"{r['p50'] / r['floor']:.2f}x" for r in mine)
                       + f" [{mark(all(r['p50'] <= 1.5 * r['floor'] for r in mine))}]; in CPU time (the agent's "
                       f"a scrape / the floor's, hardly moved by the machine's load): "
                       + ", ".join(f"{r['n']}: {r['cpu'] / r['floor_cpu']:.2f}x" for r in mine)
                       + f" [{mark(all(r['cpu'] <= 1.5 * r['floor_cpu'] for r in mine))}]")
    for where in ("real", "fake"):
        r5k = by.get((where, 5000))
        if r5k:
            out.append(f"- resident memory < 64 MB at 5,000 containers ({where}): {r5k['rss']:.0f} MB "
                       f"(peak {r5k['hwm']:.0f}) [{mark(r5k['rss'] < 64)}]")
    if issue15 is not None:
        out.append("")
        out.append("Target (issue 15: the scrape with all of it enabled):")
        out.extend(issue15_lines(issue15))
    if memory15 is not None:
        out.append("")
        out.append("Target (issue 15: resident memory with all of it enabled):")
        out.append(issue15_memory_line(memory15))
    if ephemeral is not None:
        from ephemeral_cost import report_lines
        out.append("")
        out.append("The ephemeral-storage walk (issue 15.2; off the scrape path, its own thread):")
        out.extend(report_lines(ephemeral))
    out.append("")
    out.extend(f"- {n}" for n in notes)
    return "\n".join(out)


def bytecode_as_shipped() -> None:
    """Run the agents from bytecode, as the image does (its Dockerfile runs compileall).

    Under PYTHONDONTWRITEBYTECODE, set on this machine and in CI, every agent compiled
    the package from source at start, and the compiler's leftover heap counted in
    every RSS figure: 1.7-1.8 MB after importing serve's modules, 0.4 MB at 5,000
    containers with every collector (82.7 -> 82.3 MB, back to back; later
    allocations reuse most of it). The bytecode goes to a cache outside the
    repository; one child writes it before any agent starts, so none pays for it.
    """
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cri-exporter" / "bench-pycache"
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(cache)
    subprocess.run([sys.executable, "-c", "import importlib, pkgutil, cri_exporter\n"
                    "for m in pkgutil.walk_packages(cri_exporter.__path__, 'cri_exporter.'):\n"
                    "    if m.name != 'cri_exporter.__main__':  # that one runs the command line\n"
                    "        importlib.import_module(m.name)"], check=True, cwd=REPO)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", default="10,50,100,250,1000", help="real containerd container counts ('' to skip)")
    ap.add_argument("--fake", default="100,250,1000,5000", help="fake CRI container counts")
    ap.add_argument("--containerd", default="1.6,2.1",
                    help="containerd versions for the real part, one after the other (crilab.versions: 1.6,1.7,2.1)")
    ap.add_argument("--scrapes", type=int, default=30)
    ap.add_argument("--create-budget", type=float, default=240, help="seconds allowed for creating real pods")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--floor-child", metavar="SPEC", help=argparse.SUPPRESS)  # floor(): the bare work in a process of its own
    ap.add_argument("--terminations-only", action="store_true", help="only the termination tracker's cost")
    ap.add_argument("--container-logs-only", action="store_true",
                    help="only the container_logs collector's cost (fake 1,000 and 5,000 containers)")
    ap.add_argument("--fds-only", action="store_true", help="only the container_fds collector's cost (fake 1,000)")
    ap.add_argument("--issue15-memory-only", action="store_true",
                    help="only issue 15's memory target: RSS at 5,000 fake containers, every collector but the doctor")
    ap.add_argument("--issue13-memory-only", action="store_true",
                    help="only issue 13's memory target: RSS at 5,000 fake containers (the largest of --fake), "
                         "bench's collectors")
    ap.add_argument("--agent-src", help="with --issue13-memory-only: run the agent from this source tree")
    ap.add_argument("--keep-tree", help="with --issue13-memory-only: build the cgroup tree here once, reuse it")
    ap.add_argument("--issue15-only", action="store_true",
                    help="only issue 15's target: the scrape with all of it against the one before it (fake 1,000)")
    args = ap.parse_args()
    if args.floor_child:
        floor_child(args.floor_child)
        return
    bytecode_as_shipped()
    if args.container_logs_only:
        print("\n".join(container_logs_lines(container_logs_cost([1000, 5000], args.scrapes))))
        return
    if args.terminations_only:
        print(report([], [], [], [], args, term=terminations_cost([1000, 5000])))
        return
    if args.fds_only:
        print("\n".join(fds_report(fds_cost([1000], args.scrapes))))
        return
    if args.issue15_memory_only:
        print(issue15_memory_line(issue15_memory(5000, min(args.scrapes, 10))))
        return
    if args.issue13_memory_only:
        n = max(int(x) for x in args.fake.split(","))  # 5,000 unless asked: the issue's size
        print(issue13_memory_line(issue13_memory(n, max(5, args.scrapes // 3), args.agent_src, args.keep_tree)))
        return
    if args.issue15_only:
        print("\n".join(issue15_lines(issue15_cost(1000, args.scrapes))))
        return
    if args.quick:
        args.real, args.fake, args.scrapes = "10,50", "100,250,1000", 10
    rows: list[dict] = []
    notes: list[str] = []
    expo: list[dict] = []
    lean: list[dict] = []
    started = time.monotonic()
    real = [int(x) for x in args.real.split(",") if x]
    if real:
        if os.geteuid() != 0:
            notes.append("real containerd skipped: needs root")
        else:
            for version in [v.strip() for v in args.containerd.split(",") if v.strip()]:
                run_real(real, args.scrapes, args.create_budget, rows, notes, version, lean)
    run_fake([int(x) for x in args.fake.split(",") if x], args.scrapes, rows, notes, expo, lean)
    gz = []
    text = next((e["text"] for e in expo if e.get("text")), None)
    if text:
        for level in (1, 3, 6, 9):
            t = time.perf_counter()
            for _ in range(3):
                size = len(gzip.compress(text, compresslevel=level))
            gz.append((level, (time.perf_counter() - t) / 3, size, len(text)))
    term = terminations_cost([int(x) for x in args.fake.split(",") if x])
    logs = container_logs_cost([n for n in (int(x) for x in args.fake.split(",") if x) if n >= 1000], args.scrapes)
    fake_counts = [int(x) for x in args.fake.split(",") if x and int(x) <= 1000]
    notes.extend(line[2:] for line in fds_report(fds_cost(fake_counts[-1:], args.scrapes)))
    from ephemeral_cost import ephemeral_storage_cost
    fakes = [int(x) for x in args.fake.split(",") if x]
    ephemeral = ephemeral_storage_cost(min(1000, max(fakes))) if fakes else None
    # at 1,000 containers, the issue's size (or the largest fake node below it: the smoke test's 100)
    small = [n for n in fakes if n <= 1000]
    issue15 = issue15_cost(max(small), args.scrapes) if small else None
    memory15 = issue15_memory(5000, min(args.scrapes, 10)) if 5000 in fakes else None
    notes.append(f"benchmark ran in {time.monotonic() - started:.0f} s")
    print(report(rows, expo, gz, notes, args, lean, term, logs, ephemeral, issue15, memory15))


if __name__ == "__main__":
    main()
