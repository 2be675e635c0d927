"""Agents from several checkouts scraped in turn on one node: agent CPU a scrape each, and the floor's.

    .venv/bin/python benchmarks/in_turn.py --real 10 --scrapes 300 /tmp/before .   # root: a real containerd
    .venv/bin/python benchmarks/in_turn.py --fake 100 --scrapes 60 /tmp/before . /tmp/before .
    .venv/bin/python benchmarks/in_turn.py --fake 1000 --scrapes 20 --parse-floor .   # and the parse and write floors
    .venv/bin/python benchmarks/in_turn.py --fake 1000 --scrapes 16 --confined-floor .   # and the floor under Landlock

Each checkout (a directory with `cri_exporter/`, e.g. `git archive main | tar -x -C /tmp/before`) runs as
its own `serve` process with bench.py's collectors; they are asked one after the other, round after round,
so each sees the same load: on a shared machine CPU time a scrape moves with the load by 20% and more
between runs minutes apart, while two agents scraped in turn stay within a few percent of each other
(docs/performance.md, "Where a 10-container scrape's CPU goes"). Name a checkout twice to see the noise.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # puts the repository on sys.path
import parse_floor
from tests.exporter_proc import ExporterProcess
from tests.fakecri import FakeCRI, fleet, make_cgroup_tree


def in_turn(endpoint: str, root: str, checkouts: list[str], scrapes: int, base: Path) -> list[float]:
    agents = []
    try:
        for i, checkout in enumerate(checkouts):
            agents.append(ExporterProcess(endpoint, "--host-root", root, "--collectors", bench.BENCH_COLLECTORS,
                                          "--stats-interval", "3600", "--scrape-timeout", "30", "--runtime-timeout", "20",
                                          env={"PYTHONPATH": str(Path(checkout).resolve())},
                                          log_path=base / f"agent-{i}.log"))
        time.sleep(1.5)  # the first background stats refresh
        for agent in agents:
            for _ in range(3):
                bench.fetch(agent.url + "/metrics")
        before = [bench.cpu_seconds([a.proc.pid]) for a in agents]
        for _ in range(scrapes):
            for agent in agents:
                bench.fetch(agent.url + "/metrics")
        return [(bench.cpu_seconds([a.proc.pid]) - c) / scrapes for a, c in zip(agents, before)]
    finally:
        for agent in agents:
            agent.stop()


def report(where: str, endpoint: str, root: str, args, base: Path) -> None:
    cpus = in_turn(endpoint, root, args.checkouts, args.scrapes, base)
    paths, families = bench.recorded_files(endpoint, root)
    fl = bench.floors(endpoint, paths, max(20, args.scrapes // 3), confined_root=root if args.confined_floor else None)
    floor = fl["cpu"]
    cells = ", ".join(f"{c}: {cpu * 1000:.2f} ms ({cpu / floor:.2f}x)" for c, cpu in zip(args.checkouts, cpus))
    print(f"{where}: load {os.getloadavg()[0]:.1f}; floor CPU {floor * 1000:.2f} ms; agent CPU a scrape: {cells}",
          flush=True)
    if args.confined_floor:  # the same reads under serve's Landlock policy: the floor a confined agent has
        conf = fl["cpu_confined"]
        print(f"{where}: confined floor CPU {conf * 1000:.2f} ms ({conf / floor:.2f}x the bare floor; "
              f"{fl['confinement']}); agent / confined floor: "
              + ", ".join(f"{c}: {cpu / conf:.2f}x" for c, cpu in zip(args.checkouts, cpus)), flush=True)
    if args.parse_floor:
        f = parse_floor.floors(endpoint, paths, families, max(20, args.scrapes // 3))
        bare = (f["floor"] + f["floor2"]) / 2  # measured before and after the other two: their mean
        print(f"{where}: in one child, floor {f['floor'] * 1000:.2f} / {f['floor2'] * 1000:.2f} ms (before / after), "
              f"parse floor {f['parse'] * 1000:.2f} ms ({f['parse'] / bare:.2f}x their mean), write floor "
              f"{f['write'] * 1000:.2f} ms ({f['write'] / bare:.2f}x); agent / write floor: "
              + ", ".join(f"{cpu / f['write']:.2f}x" for cpu in cpus), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkouts", nargs="+")
    ap.add_argument("--real", type=int, default=0, help="real containerd containers (0: none)")
    ap.add_argument("--fake", type=int, default=0, help="fake CRI containers (0: none)")
    ap.add_argument("--scrapes", type=int, default=100)
    ap.add_argument("--confined-floor", action="store_true",
                    help="also the floor read under serve's Landlock policy (bench.floors), beside the bare one")
    ap.add_argument("--parse-floor", action="store_true",
                    help="also the parse and write floors (benchmarks/parse_floor.py)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="inturn-", dir="/tmp"))
    try:
        if args.real:
            from crilab import Containerd, run_pod

            cd = Containerd(base / "cd")
            cd.start()
            try:
                made, pods = 0, 0
                while made < args.real:
                    pod = run_pod(cd, f"bench-{pods}", f"team-{pods % 20:02d}")
                    for k in range(min(bench.REAL_PER_POD, args.real - made)):
                        pod.add_container(f"c{k}", bench.SLEEP)
                        made += 1
                    pods += 1
                report(f"real {args.real}", cd.endpoint, "/", args, base)
            finally:
                cd.cleanup()
        if args.fake:
            fleet_pods = fleet(args.fake)
            root = make_cgroup_tree(base / "root", fleet_pods)
            # its runtime under <root>/proc, so the runtime_processes collector finds it (bench.add_fake_runtime)
            with FakeCRI(bench.add_fake_runtime(root, fleet_pods), fleet_pods) as fake:
                report(f"fake {args.fake}", fake.endpoint, str(root), args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
