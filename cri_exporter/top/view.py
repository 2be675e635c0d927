"""What one screen of `top` shows, the same for the live view and --once: the
title, the node line, the rows (filtered and sorted), and why some are flagged."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from cri_exporter.top import table
from cri_exporter.top.rows import Row, container_rows, matches, pod_rows, sort_rows
from cri_exporter.top.sampler import Reading

SORT_LABELS = {"cpu": "CPU", "memory": "memory", "throttle": "throttling", "pressure": "pressure", "restarts": "restarts"}


@dataclass
class Options:
    sort: str = "cpu"
    pods: bool = False
    namespaces: tuple[str, ...] = ()
    pod_globs: tuple[str, ...] = ()
    interval: float = 2.0


@dataclass
class Frame:
    title: str
    node: str | None
    error: str | None
    rows: list[Row] = field(default_factory=list)

    def lines(self, width: int | None, pods: bool) -> tuple[table.Table, list[str]]:
        """The table for `width` and the lines under it (legend)."""
        return table.make_table(self.rows, width, pods), table.legend(self.rows)


def frame(opts: Options, runtime: str, node_name: str, before: Reading | None, now: Reading | None) -> Frame:
    what = "pods" if opts.pods else "containers"
    clock = time.strftime("%H:%M:%S", time.localtime(now.wall if now else time.time()))
    cgroup = f"cgroup {now.cgroup_version}" if now and now.cgroup_version else "cgroup -"
    # What matters most first: a narrow terminal cuts the end.
    title = (f"cri-exporter top - {table.sanitize(node_name)} - {table.sanitize(runtime)} - {cgroup} - {clock} - "
             f"{what} by {SORT_LABELS[opts.sort]}, every {opts.interval:g}s")
    if now is None:
        return Frame(title, None, None)
    if now.inventory is None:
        return Frame(title, _node_line(before, now, []), f"runtime: {now.error}")
    make = pod_rows if opts.pods else container_rows
    rows = sort_rows((r for r in make(before, now) if matches(r, opts.namespaces, opts.pod_globs)), opts.sort)
    return Frame(title, _node_line(before, now, rows), None, rows)


def _node_line(before: Reading | None, now: Reading, rows: list[Row]) -> str:
    n = now.node
    parts = [f"node: {n.cpus if n.cpus is not None else '-'} cpus {table.size(n.memory_bytes)}"]
    window = now.mono - before.mono if before else None
    stalls = []
    for resource, label in (("cpu", "cpu"), ("memory", "mem"), ("io", "io")):
        old = before.node.pressure.get(resource) if before else None
        new = n.pressure.get(resource)
        share = None
        if window and old is not None and new is not None and old.some_us is not None and new.some_us is not None:
            share = min(1.0, max(0.0, (new.some_us - old.some_us) / 1e6 / window))
        stalls.append(f"{label} {table.percent(share)}")
    parts.append("pressure " + " ".join(stalls))
    running = [r for r in rows if r.state in ("running", "ready")]
    used = [r.cpu_cores for r in running if r.cpu_cores is not None]
    memory = [r.memory_working_set_bytes for r in running if r.memory_working_set_bytes is not None]
    parts.append(f"{len(running)} running: {table.cores(sum(used)) if used else '-'} cores "
                 f"{table.size(sum(memory)) if memory else '-'}")
    return " | ".join(parts)
