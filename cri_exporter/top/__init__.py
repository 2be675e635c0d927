"""`cri-exporter top`: which container is eating this node, live, from the same
readers as `serve` (cri/ for the inventory, cgroups/ for the counters).

    sampler (one Reading: CRI lists + cgroup files, CRI stats where a cgroup
    cannot be read) -> rows (two Readings -> rates, filtered, sorted) ->
    view (a Frame: title, node line, rows) -> table (cells, widths, JSON) ->
    screen (curses, live) or command (--once, streams)
"""

# --sort choices, biggest first (pressure: the highest of CPU, memory and IO).
SORT_KEYS = ("cpu", "memory", "throttle", "pressure", "restarts")
