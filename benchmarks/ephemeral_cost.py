"""The ephemeral-storage walk's price (issue 15.2), for benchmarks/bench.py.

A fake node of n containers (tests/fakecri.py's fleet, two a pod) gets the
kubelet's layout under a temporary host root, with file counts a busy node
has: every pod an emptyDir of 20 small files in 4 directories, one pod in
ten a cache of 2,000 files in 40 directories (a package cache, a build
tree), every container a log directory with its current log and three
rotated ones. Measured: one walk unpaced (its CPU and entries a second),
one walk at the default pacing (--ephemeral-storage-files-per-second),
what that costs a minute at the default interval, the walk's peak Python
memory (tracemalloc) on the biggest tree, and the collector's own time on
the scrape path (serving what the walk found, joined with the inventory).
"""
from __future__ import annotations

import shutil
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from cri_exporter.collectors.base import ScrapeContext
from cri_exporter.collectors.ephemeral_storage import EphemeralStorageCollector
from cri_exporter.cri import CriClient
from cri_exporter.ephemeral_storage import EMPTY_DIR, EphemeralStorageWalker, KubeletPaths
from cri_exporter.doctor.facts.kubelet import DEFAULT_EVICTION_HARD
from cri_exporter.hostfs import HostFS
from cri_exporter.settings import DEFAULTS
from tests.fakecri import FakeCRI, fleet

SMALL, CACHE, CACHE_EVERY, ROTATED = 20, 2000, 10, 3


def _layout(root: Path, pods) -> int:
    """The kubelet's directories for `pods` under `root`; entries made."""
    made = 0
    payload = b"x" * 700
    for i, p in enumerate(pods):
        meta = p.sandbox.metadata
        vols = root / "var/lib/kubelet/pods" / meta.uid / "volumes" / EMPTY_DIR
        files = CACHE if i % CACHE_EVERY == 0 else SMALL
        per_dir = 50 if files == CACHE else 5
        for v in range(files):
            d = vols / "data" / f"d{v // per_dir}"
            if v % per_dir == 0:
                d.mkdir(parents=True)
                made += 1
            (d / f"f{v}").write_bytes(payload)
            made += 1
        logs = root / "var/log/pods" / f"{meta.namespace}_{meta.name}_{meta.uid}"
        for c in p.containers:
            cdir = logs / c.metadata.name
            cdir.mkdir(parents=True)
            (cdir / "0.log").write_bytes(payload * 20)
            for r in range(ROTATED):
                (cdir / f"0.log.2026120{r}-000000.gz").write_bytes(payload)
            made += 2 + ROTATED
    return made


def _paths(_hostfs) -> KubeletPaths:
    return KubeletPaths("/var/lib/kubelet", "/var/log/pods", dict(DEFAULT_EVICTION_HARD), "kubelet default")


def ephemeral_storage_cost(n: int, scrapes: int = 20) -> dict:
    base = Path(tempfile.mkdtemp(prefix="ephb-", dir="/tmp"))
    try:
        pods = fleet(n)
        made = _layout(base / "root", pods)
        hostfs = HostFS(str(base / "root"))
        walker = EphemeralStorageWalker(hostfs, DEFAULTS.ephemeral_storage_interval, 0, paths=_paths)
        walker.walk_once()  # warm: the dentries in the page cache, as on a node walked every minute
        cpu0, t0 = time.thread_time(), time.perf_counter()
        walker.walk_once()
        unpaced_cpu, unpaced_wall = time.thread_time() - cpu0, time.perf_counter() - t0
        entries = walker.counters.last_walk_files
        paced = EphemeralStorageWalker(hostfs, DEFAULTS.ephemeral_storage_interval,
                                       DEFAULTS.ephemeral_storage_files_per_second, paths=_paths)
        cpu0, t0 = time.thread_time(), time.perf_counter()
        paced.walk_once()
        paced_cpu, paced_wall = time.thread_time() - cpu0, time.perf_counter() - t0
        tracemalloc.start()
        EphemeralStorageWalker(hostfs, 60, 0, paths=_paths).walk_once()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        with FakeCRI(base / "cri.sock", pods) as fake:
            client = CriClient(fake.endpoint, timeout=30)
            collector = EphemeralStorageCollector(walker)
            walker._thread = object()  # type: ignore[assignment]  # serve the walk made above, as a started walker does
            walker.first.set()
            times = []
            try:
                for _ in range(scrapes):
                    ctx = ScrapeContext(client, hostfs, time.monotonic() + 30)
                    ctx.inventory()  # the scrape's shared step, not the collector's cost
                    t = time.perf_counter()
                    series = sum(len(m.samples) for m in collector.collect(ctx))
                    times.append(time.perf_counter() - t)
            finally:
                client.close()
        walks_a_minute = 60 / max(DEFAULTS.ephemeral_storage_interval, paced_wall)
        return {"n": n, "pods": len(pods), "made": made, "entries": entries,
                "unpaced_wall": unpaced_wall, "unpaced_cpu": unpaced_cpu,
                "paced_wall": paced_wall, "paced_cpu": paced_cpu,
                "cpu_per_min": paced_cpu * walks_a_minute, "peak": peak,
                "collect_p50": statistics.median(times), "series": series}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def report_lines(c: dict) -> list[str]:
    rate = DEFAULTS.ephemeral_storage_files_per_second
    return [
        f"- ephemeral_storage at {c['n']} fake containers ({c['pods']} pods, {c['entries']} directory entries: "
        f"emptyDirs of {SMALL} files, one pod in {CACHE_EVERY} a {CACHE}-file cache, 1+{ROTATED} log files a "
        f"container): one walk unpaced {c['unpaced_wall'] * 1000:.0f} ms ({c['unpaced_cpu'] * 1000:.0f} ms CPU, "
        f"{c['entries'] / c['unpaced_cpu']:.0f} entries a CPU second); at the default {rate:g} entries/s a walk "
        f"takes {c['paced_wall']:.1f} s and {c['paced_cpu'] * 1000:.0f} ms CPU, every "
        f"{DEFAULTS.ephemeral_storage_interval:g} s: {c['cpu_per_min'] * 1000:.0f} ms CPU a minute "
        f"({c['cpu_per_min'] / 60 * 100:.2f}% of a core), {c['entries'] / c['paced_wall']:.0f} entries a second "
        f"while walking; its peak Python memory {c['peak'] / 1e6:.2f} MB; the collector on the scrape path "
        f"{c['collect_p50'] * 1000:.1f} ms p50 ({c['series']} series)",
    ]


if __name__ == "__main__":
    import sys

    for line in report_lines(ephemeral_storage_cost(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)):
        print(line)
