"""The floor plus the least Python work a Python agent cannot skip: what issue 13's 1.5x is up against.

bench.py's floor is the bare work of a scrape: the two CRI list calls and every cgroup and /proc file
the scrape reads, read once (open, read, close), nothing parsed. An agent written in Python must also
turn each file's bytes into the numbers it exports, and write each series as a line of text and
compress it. Two more floors measure the least of that, in a child process as bench.floor does:

- parse floor: the floor, and each file's bytes turned into the numbers the exposition takes from it
  (one int() per one-number file; for a keyed file one split and int() of the keys exported only; one
  regex pass for PSI and v1 blkio; net/dev split), nothing kept, no objects, no families;
- write floor: the parse floor, and the scrape's series written once as text from label sets rendered
  in advance (`prefix + repr(value)`, no Go float format, no HELP/TYPE) and gzip-compressed at level 1
  with the agent's compressor.

Neither counts HTTP, gRPC beyond the two list calls, the inventory's model, status calls, the label
cache or the agent's own metrics. So an agent at 1.5x the floor needs parse-floor / floor well below
1.5: the rest of its work has to fit in what is left.

    .venv/bin/python benchmarks/in_turn.py --fake 1000 --scrapes 20 --parse-floor .   # all three floors
"""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Keys the exposition takes from each keyed file (v1 and v2 spellings), cgroups/*.py.
_KEYED = {
    "memory.stat": (b"total_rss", b"rss", b"total_cache", b"cache", b"total_active_file", b"active_file",
                    b"total_inactive_file", b"inactive_file", b"total_mapped_file", b"mapped_file", b"total_swap",
                    b"swap", b"total_pgfault", b"pgfault", b"total_pgmajfault", b"pgmajfault", b"anon", b"file",
                    b"file_mapped"),
    "cpu.stat": (b"nr_periods", b"nr_throttled", b"throttled_time", b"usage_usec", b"user_usec", b"system_usec",
                 b"throttled_usec"),
    "cpuacct.stat": (b"user", b"system"),
    "memory.oom_control": (b"oom_kill",),
    "memory.events": (b"high", b"max", b"oom", b"oom_kill"),
}
_PSI = re.compile(rb"^(some|full) .*total=([0-9]+)", re.M)
_BLKIO = re.compile(rb"^(\d+:\d+) (Read|Write) (\d+)$", re.M)


def _parse(name: str, data: bytes) -> None:
    keys = _KEYED.get(name)
    if keys is not None:
        t = data.split()
        d = dict(zip(t[::2], t[1::2]))
        for k in keys:
            v = d.get(k)
            if v is not None:
                int(v)
    elif name.endswith(".pressure"):
        for _, v in _PSI.findall(data):
            int(v)
    elif name.startswith("blkio."):
        for _, _, v in _BLKIO.findall(data):
            int(v)
    elif name == "io.stat":
        for line in data.splitlines():
            for field in line.split()[1:]:
                int(field.partition(b"=")[2])
    elif name == "dev":  # /proc/<pid>/net/dev
        for line in data.splitlines()[2:]:
            [int(x) for x in line.partition(b":")[2].split()]
    elif name in ("cgroup", "uevent", "cgroup.procs"):
        data.split(b"\n")
    elif name == "cpu.max":
        data.split()
    else:  # one number
        try:
            int(data)
        except ValueError:  # "max"
            pass


def floors(endpoint: str, paths: list[tuple[str, str]], families, n: int) -> dict:
    """{floor, parse, write}: median CPU seconds of each, measured in one child process."""
    from cri_exporter.exposition import Family, RenderedFamily
    lines: list[tuple[str, float]] = []
    for f in families:
        if isinstance(f, Family):
            for labels, v in zip(f.labelsets, f.values):
                lines.append((f"{f.sample_name}{labels.text} ", v))
        elif not isinstance(f, RenderedFamily):
            lines += [(f"{s.name} ", s.value) for s in f.samples]
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir="/tmp") as spec:
        json.dump({"endpoint": endpoint, "paths": [[d, name] for d, name in paths], "lines": lines, "n": n}, spec)
        spec.flush()
        out = subprocess.run([sys.executable, __file__, spec.name], check=True, capture_output=True, text=True).stdout
    got: dict = json.loads(out.strip().splitlines()[-1])
    return got


def _child(spec_path: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from cri_exporter.cri import CriClient
    from cri_exporter.deflate import gzip_compressor
    from floor_read import bare_read
    spec = json.loads(Path(spec_path).read_text())
    client = CriClient(spec["endpoint"], timeout=30)
    paths = [(f"{d}/{name}", name) for d, name in spec["paths"]]
    lines = [(p, float(v)) for p, v in spec["lines"]]

    plain = [p for p, _ in paths]

    def bare() -> None:
        bare_read(client, plain)

    def parse() -> None:
        client.list_pod_sandboxes()
        client.list_containers()
        for p, name in paths:
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                continue
            data = os.read(fd, 65536)
            os.close(fd)
            _parse(name, data)

    def write() -> None:
        parse()
        packer = gzip_compressor(1)
        text = "\n".join([p + repr(v) for p, v in lines])
        packer.compress(text.encode())
        packer.flush()

    got = {}
    for label, work in (("floor", bare), ("parse", parse), ("write", write), ("floor2", bare)):
        cpus = []
        for _ in range(spec["n"] + 1):
            c = time.process_time()
            work()
            cpus.append(time.process_time() - c)
        got[label] = statistics.median(cpus[1:])
    client.close()
    print(json.dumps(got))


if __name__ == "__main__":
    _child(sys.argv[1])
