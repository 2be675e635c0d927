"""What `serve`'s heap holds at rest after scrapes at N fake containers, seen from inside one process.

    .venv/bin/python benchmarks/heap_at_rest.py --fake 5000 --scrapes 8
    .venv/bin/python benchmarks/heap_at_rest.py --fake 5000 --collectors all --trace   # + tracemalloc
    .venv/bin/python benchmarks/heap_at_rest.py --fake 5000 --scrapes 4 --peak   # the last scrape's peak

The fake runtime (tests/fakecri.py) runs in a child process; this process builds the Exporter as
`serve` does (malloc tuning, start, frozen start-up objects) and renders /metrics N times with gzip,
trimming after each answer as the server does, `--gap` seconds apart. At rest it prints RSS (the lowest
over 3 s), pymalloc's arenas and what is free inside them (`sys._debugmallocstats`, after each scrape
too), and with `--trace` the allocations the last scrape made and still holds (tracemalloc runs from its
start; `--trace-from 1`: from the first scrape on), by line: what scrapes keep among their temporaries.
With `--peak`, the small blocks (pymalloc's) alive at the last scrape's peak and gone after it, by line:
the temporaries whose pools are the holes at rest (the arenas are as many as live plus peak).
"""
from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # puts the repository on sys.path

NODE = """
import sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from tests.fakecri import FakeCRI, fleet, make_cgroup_tree
pods = fleet({n})
root = Path({base!r}) / "root"
if not (root / "sys").exists():
    make_cgroup_tree(root, pods)
with FakeCRI(Path({base!r}) / "cri.sock", pods) as fake:
    print(fake.endpoint, flush=True)
    sys.stdin.read()
"""


def mallocstats() -> dict[str, float]:
    """Arenas, and bytes free in pools in use and in empty pools, from sys._debugmallocstats (C stderr)."""
    with tempfile.TemporaryFile() as f:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode()

    def num(label: str) -> float:
        m = re.search(rf"^{re.escape(label)}\s*=\s*([\d,]+)", text, re.M)
        return float(m.group(1).replace(",", "")) if m else float("nan")

    return {"arenas": num("# arenas allocated current"), "highwater": num("# arenas highwater mark"),
            "allocated": num("# bytes in allocated blocks"), "free_in_pools": num("# bytes in available blocks"),
            "empty_pools": _empty_pools(text)}


def _empty_pools(text: str) -> float:
    m = re.search(r"^(\d+) unused pools \* (\d+) bytes\s*=\s*([\d,]+)", text, re.M)
    return float(m.group(3).replace(",", "")) if m else float("nan")


def rss_low(seconds: float = 3.0) -> float:
    low, until = float("inf"), time.monotonic() + seconds
    while time.monotonic() < until:
        with open("/proc/self/statm") as f:
            low = min(low, int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20)
        time.sleep(0.05)
    return low


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fake", type=int, default=5000)
    ap.add_argument("--scrapes", type=int, default=8)
    ap.add_argument("--gap", type=float, default=1.0)
    ap.add_argument("--collectors", default=bench.BENCH_COLLECTORS, help="'all': every collector but the doctor")
    ap.add_argument("--trace", action="store_true", help="tracemalloc: what the last scrape made and kept")
    ap.add_argument("--trace-from", type=int, default=0,
                    help="tracemalloc from this scrape on (1: the first), instead of the last scrape only")
    ap.add_argument("--peak", action="store_true",
                    help="tracemalloc through the last scrape: the small blocks alive at its peak and not kept after it")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--base", help="directory for the fake node's tree (kept; made if missing)")
    args = ap.parse_args()
    collectors = bench.ALL_BUT_DOCTOR if args.collectors == "all" else args.collectors
    base = args.base or tempfile.mkdtemp(prefix="heap-", dir="/tmp")
    Path(base).mkdir(parents=True, exist_ok=True)
    node = subprocess.Popen([sys.executable, "-c", NODE.format(repo=str(bench.REPO), n=args.fake, base=base)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert node.stdout is not None and node.stdin is not None
    try:
        endpoint = node.stdout.readline().strip()
        measure(endpoint, str(Path(base) / "root"), collectors, args)
    finally:
        node.stdin.close()
        node.wait()


def measure(endpoint: str, root: str, collectors: str, args) -> None:
    from cri_exporter import memory_tuning
    from cri_exporter.exporter import Exporter
    from cri_exporter.settings import Settings, parse_collectors

    memory_tuning.tune_malloc()
    settings = Settings(runtime_endpoint=endpoint, host_root=root, collectors=parse_collectors(collectors),
                        stats_interval=3600, scrape_timeout=30, runtime_timeout=20,
                        container_log_interval=5, fd_sample_interval=5, ephemeral_storage_interval=10,
                        runtime_process_interval=5)
    exporter = Exporter(settings)
    exporter.start()
    memory_tuning.freeze_startup_objects()
    st = mallocstats()
    print(f"started: pymalloc {st['arenas']:.0f} arenas, live {st['allocated'] / 2**20:.2f} MB, free in used pools "
          f"{st['free_in_pools'] / 2**20:.2f} MB, empty pools {st['empty_pools'] / 2**20:.2f} MB", flush=True)
    headers = {"Accept-Encoding": "gzip"}
    size = 0
    sampler = None
    try:
        for i in range(args.scrapes):
            if args.trace_from and i == args.trace_from - 1:
                tracemalloc.start(1)
            elif (args.trace or args.peak) and not args.trace_from and i == args.scrapes - 1:
                tracemalloc.start(1) if not tracemalloc.is_tracing() else tracemalloc.clear_traces()
            t = time.process_time()
            sampler = _PeakSampler() if args.peak and i == args.scrapes - 1 else None
            parts, _ = exporter.render(headers)
            if sampler is not None:
                sampler.stop()
            size = sum(len(p) for p in parts)
            del parts
            exporter.release_memory()
            cpu = time.process_time() - t
            heap = ""
            if not tracemalloc.is_tracing():  # tracemalloc's hooks hide pymalloc from _debugmallocstats
                st = mallocstats()
                heap = (f"; pymalloc {st['arenas']:.0f} arenas, live {st['allocated'] / 2**20:.2f} MB, free in used "
                        f"pools {st['free_in_pools'] / 2**20:.2f} MB, empty pools {st['empty_pools'] / 2**20:.2f} MB")
            print(f"scrape {i + 1}: {cpu * 1000:.0f} ms CPU, {size} bytes{heap}", flush=True)
            time.sleep(args.gap)
        gc.collect()  # what a cycle kept is not a pin; the server's gc would find it too
        memory_tuning.release_freed_memory()
        snap = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
        if snap is not None:
            tracemalloc.stop()
        stats = mallocstats()
        rss = rss_low()
        print(f"at rest: RSS {rss:.1f} MB; pymalloc {stats['arenas']:.0f} arenas (high-water {stats['highwater']:.0f}), "
              f"live {stats['allocated'] / 2**20:.2f} MB, free in used pools {stats['free_in_pools'] / 2**20:.2f} MB, "
              f"empty pools {stats['empty_pools'] / 2**20:.2f} MB")
        if snap is not None and args.peak and sampler is not None and sampler.snap is not None:
            _print_peak(sampler, snap, args.top)
        elif snap is not None:
            kept = snap.statistics("lineno")
            total = sum(s.size for s in kept)
            small = sum(t.size for t in snap.traces if t.size <= 512)
            print(f"the last scrape made and still holds: {total / 2**20:.2f} MB in {sum(s.count for s in kept)} "
                  f"blocks ({small / 2**20:.2f} MB in blocks of 512 bytes or less: pymalloc's)")
            for s in kept[:args.top]:
                frame = s.traceback[0]
                print(f"  {s.size / 1024:9.1f} KiB {s.count:7d}  {frame.filename.split('/work/')[-1]}:{frame.lineno}")
    finally:
        exporter.stop()


class _PeakSampler:
    """Snapshots tracemalloc's small blocks whenever the traced total passes its last high by 1 MB (the
    snapshot holds the GIL, so the scrape waits for it): the last one is the scrape's peak, to 1 MB."""

    def __init__(self) -> None:
        import threading
        self.snap: tracemalloc.Snapshot | None = None
        self.high, self.done = 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(0.01):
            current, _ = tracemalloc.get_traced_memory()
            if current > self.high + 2**20:
                self.high = current
                self.snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, 0)])

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def _print_peak(sampler: _PeakSampler, after, top: int) -> None:
    """The small blocks (pymalloc's) alive at the scrape's peak and gone after it, by line: the
    temporaries whose pools become the holes at rest."""
    def small_by_line(snap) -> dict:
        out: dict = {}
        for t in snap.traces:
            if t.size <= 512:
                size, count = out.get(t.traceback[0], (0, 0))
                out[t.traceback[0]] = (size + t.size, count + 1)
        return out
    assert sampler.snap is not None
    peak, kept = small_by_line(sampler.snap), small_by_line(after)
    print(f"at the last scrape's peak: {sampler.high / 2**20:.1f} MB traced, "
          f"{sum(v[0] for v in peak.values()) / 2**20:.2f} MB of it in blocks of 512 bytes or less, "
          f"{sum(v[0] for v in kept.values()) / 2**20:.2f} MB in such blocks after it")
    rows = sorted(((size - kept.get(f, (0, 0))[0], count - kept.get(f, (0, 0))[1], f) for f, (size, count) in peak.items()),
                  key=lambda r: -r[0])
    print("small blocks alive at the peak and gone after it, by line:")
    for gone, count, frame in rows[:top]:
        print(f"  {gone / 1024:9.1f} KiB {count:7d}  {frame.filename.split('/work/')[-1]}:{frame.lineno}")


if __name__ == "__main__":
    main()
