#!/usr/bin/env python3
"""Render the "CRI / Node overview" dashboard as Prometheus saw it, to a PNG.

Every panel of dashboards/node-overview.json is drawn where its gridPos puts
it: its queries run through Prometheus's HTTP API (query_range for graphs,
instant queries for stats and bar gauges) with the dashboard's variables
substituted, and are plotted with matplotlib. So the README's picture shows
the dashboard's real queries on real data, not a mock-up.

    # against a Prometheus that scrapes cri-exporter already
    python scripts/render_overview.py --prometheus http://localhost:9090 --instance node1:9920

    # or a lab of its own (root): private containerd (the newest of the lab's
    # versions unless --runtime-version says otherwise), the standard demo pods,
    # cri-exporter and Prometheus, observed for --lab seconds
    python scripts/render_overview.py --lab 180

Needs matplotlib (a dev-only dependency).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.gridspec import GridSpec  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from crilab import versions  # noqa: E402
from dashboards import lint  # noqa: E402

BOARD = REPO / "dashboards" / "node-overview.json"
OUT = REPO / "docs" / "images" / "node-overview.png"

# Grafana's dark theme, roughly
BG, PANEL, TEXT, MUTED, GRID = "#111217", "#181b1f", "#ccccdc", "#8e8e9e", "#2c3235"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#705da0", "#37872d",
           "#fade2a"]
COLORS = {"green": "#73bf69", "red": "#f2495c", "orange": "#ff9830", "yellow": "#fade2a", "blue": "#5794f2"}


# --- Prometheus -----------------------------------------------------------
class Prom:
    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def _get(self, path: str, **params) -> dict:
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}", timeout=30) as r:
            body = json.load(r)
        if body["status"] != "success":
            raise RuntimeError(body)
        data: dict = body["data"]
        return data

    def instant(self, expr: str, at: float) -> list[dict]:
        result: list[dict] = self._get("query", query=expr, time=at)["result"]
        return result

    def range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        result: list[dict] = self._get("query_range", query=expr, start=start, end=end, step=step)["result"]
        return result


# --- formatting -----------------------------------------------------------
def fmt(value: float, unit: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    if unit == "bytes":
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(value) < 1024 or suffix == "TiB":
                return f"{value:.3g} {suffix}"
            value /= 1024
    if unit == "percentunit":
        return f"{value * 100:.3g}%"
    if unit == "s":
        if abs(value) >= 3600:
            return f"{value / 3600:.3g} h"
        if abs(value) >= 60:
            return f"{value / 60:.3g} min"
        if abs(value) >= 1 or value == 0:
            return f"{value:.3g} s"
        return f"{value * 1000:.3g} ms"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.3g} M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.3g} k"
    return f"{value:.3g}"


def legend(fmt_: str, labels: dict) -> str:
    if not fmt_:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items() if k != "__name__") + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt_)


def mapping(panel: dict, value: float) -> tuple[str | None, str | None]:
    for m in panel.get("fieldConfig", {}).get("defaults", {}).get("mappings", []):
        hit = m.get("options", {}).get(f"{value:g}")
        if hit:
            return hit.get("text"), COLORS.get(hit.get("color"), hit.get("color"))
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    color = None
    for step in steps:
        if step.get("value") is None or value >= step["value"]:
            color = COLORS.get(step["color"], step["color"])
    return None, color


# --- panels ---------------------------------------------------------------
def style(ax, title: str) -> None:
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_color(GRID)
    ax.tick_params(colors=MUTED, labelsize=7)
    ax.set_title(title, loc="left", color=TEXT, fontsize=9, fontweight="bold", pad=4)


def draw_graph(ax, panel, prom, values, start, end, step) -> None:
    unit = panel["fieldConfig"]["defaults"]["unit"]
    n = 0
    for target in panel["targets"]:
        for series in prom.range(lint.substitute(target["expr"], values), start, end, step):
            xs = [datetime.fromtimestamp(float(t)) for t, _ in series["values"]]
            ys = [float(v) for _, v in series["values"]]
            ax.plot(xs, ys, lw=1.3, color=PALETTE[n % len(PALETTE)],
                    label=legend(target.get("legendFormat", ""), series["metric"]))
            n += 1
    ax.grid(color=GRID, lw=0.5)
    defaults = panel["fieldConfig"]["defaults"]
    if defaults.get("min") is not None:
        ax.set_ylim(bottom=defaults["min"])
    if defaults.get("max") is not None:
        ax.set_ylim(top=defaults["max"] * 1.05)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v, unit)))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    if n:
        ax.legend(loc="upper left", fontsize=6.5, ncol=2 if n > 4 else 1, frameon=False, labelcolor=TEXT)
    else:
        ax.text(0.5, 0.5, "No data", color=MUTED, ha="center", va="center", transform=ax.transAxes)


def draw_stat(ax, panel, prom, values, at) -> None:
    unit = panel["fieldConfig"]["defaults"]["unit"]
    mode = panel.get("options", {}).get("textMode", "auto")
    items = []
    for target in panel["targets"]:
        for series in prom.instant(lint.substitute(target["expr"], values), at):
            value = float(series["value"][1])
            text, color = mapping(panel, value)
            name = legend(target.get("legendFormat", ""), series["metric"])
            shown = text or fmt(value, unit)
            if mode == "name":
                items.append((name, color))
            elif mode == "value_and_name" or len(panel["targets"]) > 1:
                items.append((f"{name}: {shown}", color))
            else:
                items.append((shown, color))
    ax.set_xticks([])
    ax.set_yticks([])
    if not items:
        ax.text(0.5, 0.45, "No data", color=MUTED, ha="center", va="center", transform=ax.transAxes)
        return
    size = 15 if len(items) == 1 and len(items[0][0]) < 24 else (9 if len(items) <= 3 else 7.5)
    columns = 1 if len(items) <= 3 else 2
    per_column = math.ceil(len(items) / columns)
    for i, (text, color) in enumerate(items[:8]):
        col, line = divmod(i, per_column)
        x = 0.5 if columns == 1 else 0.27 + 0.46 * col
        y = 0.45 if len(items) == 1 else 0.8 - line * min(0.65 / max(per_column - 1, 1), 0.3)
        ax.text(x, y, text, ha="center", va="center", transform=ax.transAxes, fontsize=size,
                color="#111217" if color else TEXT, fontweight="bold",
                bbox=dict(boxstyle="round,pad=0.3", fc=color, ec="none") if color else None)


def draw_bars(ax, panel, prom, values, at) -> None:
    unit = panel["fieldConfig"]["defaults"]["unit"]
    names, vals = [], []
    for target in panel["targets"]:
        for series in prom.instant(lint.substitute(target["expr"], values), at):
            names.append(legend(target.get("legendFormat", ""), series["metric"]))
            vals.append(float(series["value"][1]))
    if not vals:
        ax.text(0.5, 0.5, "No data", color=MUTED, ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    ys = range(len(vals))[::-1]
    ax.set_axisbelow(True)
    ax.barh(list(ys), vals, color=[PALETTE[i % len(PALETTE)] for i in range(len(vals))], height=0.6)
    ax.set_ylim(len(vals) - max(len(vals), 4) - 0.5, len(vals) - 0.5)  # a lone bar stays a bar, at the top
    ax.set_yticks(list(ys), names, fontsize=7, color=TEXT)
    top = panel["fieldConfig"]["defaults"].get("max")
    ax.set_xlim(0, top if top is not None else max(vals) * 1.25 or 1)
    for y, v in zip(ys, vals):
        ax.text(v, y, " " + fmt(v, unit), va="center", color=TEXT, fontsize=7)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v, unit)))
    ax.grid(axis="x", color=GRID, lw=0.5)


def render(prom: Prom, job: str, instance: str, start: float, end: float, rate_interval: str, out: Path) -> None:
    board = json.loads(BOARD.read_text())
    values = {"job": job, "instance": instance, "__rate_interval": rate_interval}
    step = max(1.0, (end - start) / 300)
    panels = board["panels"]
    total_h = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    height = total_h * 0.4 + 0.8  # inches
    fig = plt.figure(figsize=(20, height), facecolor=BG)
    gs = GridSpec(total_h, 24, figure=fig, left=0.03, right=0.99, top=1 - 0.6 / height, bottom=0.01,
                  hspace=3.2, wspace=1.2)
    fig.suptitle(f"{board['title']}  ·  job={job}  instance={instance}  ·  "
                 f"{datetime.fromtimestamp(start):%Y-%m-%d %H:%M} – {datetime.fromtimestamp(end):%H:%M}  "
                 f"(rendered from Prometheus by scripts/render_overview.py)",
                 color=TEXT, fontsize=11, x=0.01, ha="left",
                 y=1 - 0.2 / height, va="top")  # in the top margin whatever the height (80 rows: it overlapped row 1)
    for p in panels:
        g = p["gridPos"]
        if p["type"] == "row":
            ax = fig.add_subplot(gs[g["y"]:g["y"] + 1, :])
            ax.axis("off")
            ax.text(0, -0.6, p["title"], color=TEXT, fontsize=11, fontweight="bold", transform=ax.transAxes)
            continue
        ax = fig.add_subplot(gs[g["y"]:g["y"] + g["h"], g["x"]:g["x"] + g["w"]])
        style(ax, p["title"])
        if p["type"] == "timeseries":
            draw_graph(ax, p, prom, values, start, end, step)
        elif p["type"] == "stat":
            draw_stat(ax, p, prom, values, end)
        elif p["type"] == "bargauge":
            draw_bars(ax, p, prom, values, end)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72, facecolor=BG)
    plt.close(fig)


# --- a lab of its own -------------------------------------------------------
def lab(seconds: float, out: Path, version: str) -> None:
    from crilab import Containerd, run_pod
    from crilab.scenario import OOM_LIMIT, start_oom_pod, start_standard_pods
    from tests.exporter_proc import ExporterProcess, wait_for
    from tests.prometheus_proc import PrometheusProcess

    base = tempfile.mkdtemp(prefix="crilab-render-", dir="/tmp")
    cd = Containerd(os.path.join(base, "c"), version=version).start()
    exporter = prom = None
    try:
        start_standard_pods(cd)
        # The snapshot (writable layers: the pods' disk panels) every 2 s, not every 300 s: a pod
        # started during the short observation shows there at once.
        exporter = ExporterProcess(cd.endpoint, "--stats-interval", "2", "--stats-idle-interval", "2",
                                   "--doctor-interval", "30", log_path=Path(base) / "exporter.log")
        prom = PrometheusProcess([f"127.0.0.1:{exporter.port}"], scrape_interval="2s")
        wait_for(prom.targets_up, timeout=20, what="the first scrape")
        start = time.time()
        print(f"render: observing the lab for {seconds:.0f}s", flush=True)
        time.sleep(seconds / 3)
        # something happens: a memory hog is OOM-killed, a second app arrives
        start_oom_pod(cd, namespace="batch")
        shop = run_pod(cd, "checkout", "shop")
        # ... which serves on :8080 and holds a connection to itself (busybox nc accepts one client, then
        # closes its listener; each reads a pipe from sleep, so no EOF ends the connection): the TCP panels
        shop.add_container("app", ["sh", "-c", "head -c 24m /dev/urandom > /cache; "
                                   "sleep 2147483647 | nc -l -p 8081 & sleep 2147483647 | nc -l -p 8080 & "
                                   "while ! grep -q ':1F90 ' /proc/net/tcp /proc/net/tcp6; do sleep 0.1; done; "
                                   "sleep 2147483647 | nc 127.0.0.1 8080 & exec sleep 2147483647"],
                           memory_limit=OOM_LIMIT * 4)
        time.sleep(seconds / 3)
        hog = run_pod(cd, "cruncher", "analytics")
        hog.add_container("crunch", ["sh", "-c", "while :; do :; done"], cpu_quota=50000, cpu_period=100000)
        time.sleep(seconds / 3)
        end = time.time()
        render(Prom(prom.url), "cri-exporter", f"127.0.0.1:{exporter.port}", start, end, "10s", out)
        # What the picture shows failing, and where to read why, before the lab goes
        failed = Prom(prom.url).instant(
            f"min_over_time(cri_scrape_collector_success[{math.ceil(end - start)}s]) == 0", end)
        for series in failed:
            print(f"render: collector {series['metric']['collector']} failed in some scrapes "
                  f"(see {exporter.log_path})", flush=True)
    finally:
        if prom:
            prom.stop()
        if exporter:
            exporter.stop()
        cd.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prometheus", help="URL of a Prometheus scraping cri-exporter")
    parser.add_argument("--job", default="cri-exporter")
    parser.add_argument("--instance", help="the exporter's instance label (required with --prometheus)")
    parser.add_argument("--minutes", type=float, default=30, help="time range to plot, ending now")
    parser.add_argument("--rate-interval", default="1m", help="what $__rate_interval stands for")
    parser.add_argument("--lab", type=float, metavar="SECONDS", help="start a lab of its own and observe it this long")
    parser.add_argument("--runtime-version", default=versions.NAMES[-1], choices=versions.NAMES,
                        help="with --lab: the containerd version it runs (default: the newest, as the Prometheus "
                             "tests run)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.lab:
        lab(args.lab, args.out, args.runtime_version)
    elif args.prometheus and args.instance:
        end = time.time()
        render(Prom(args.prometheus), args.job, args.instance, end - args.minutes * 60, end, args.rate_interval,
               args.out)
    else:
        parser.error("give --prometheus URL --instance HOST:PORT, or --lab SECONDS")
    print(f"render: wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
