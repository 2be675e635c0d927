"""Shared pieces of the dashboards: the variables every board has and panel
factories that cannot be called without a title, a description and a unit
(the conventions tests/test_dashboards.py enforces).

Built with grafana-foundation-sdk (the build for Grafana 11.6.x: the v1
dashboard JSON it writes imports into Grafana 11 and 12 alike).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from grafana_foundation_sdk.builders import bargauge, common as cb, dashboard as db, prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard as dm

from dashboards.lint import DEFAULT_ONLY_NOTE, DEFAULT_ONLY_TITLE

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")

#: The selector every query starts from: one exporter instance (one node).
NODE = 'job="$job", instance="$instance"'

#: The exporter's default job name (see deploy/ and alerts/settings.py).
DEFAULT_JOB = "cri-exporter"

TAGS = ["cri-exporter", "kubernetes", "cri"]


def query(expr: str, legend: str = "", instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    return q.instant() if instant else q.range()


@dataclass(frozen=True)
class LeanGap:
    """The families a panel reads that the lean profile (cri_exporter/metric_profiles.py)
    leaves out, and why it does: the panel is then titled and described as empty under
    that profile (tests/test_metric_budget.py holds every such panel to it)."""

    families: tuple[str, ...]
    why: str

    def mark(self, title: str, description: str) -> tuple[str, str]:
        names = ", ".join(f"`{f}`" for f in self.families)
        verb = "is" if len(self.families) == 1 else "are"
        return (title + DEFAULT_ONLY_TITLE,
                f"{description} {DEFAULT_ONLY_NOTE} (the --metrics-allow set of docs/metrics.md, \"Series budget\"): "
                f"{names} {verb} left out of it because {self.why}. Served by default.")


# The families the boards show though the lean profile leaves them out, and why (docs/metrics.md).
TCP_GAP = LeanGap(("cri_pod_tcp_connections",),
                  "it is 11 series a pod (one per state), as many as the lean set's whole per-pod budget")
LAYER_INODE_GAP = LeanGap(("cri_pod_emptydir_inodes", "cri_container_writable_layer_inodes"),
                          "they cost a series per emptyDir volume and per container; the pod's bytes per volume "
                          "and per writable layer (which the lean set keeps) say where space goes")

SAMPLER_GAP = LeanGap(("cri_fd_sampler_oldest_reading_timestamp_seconds", "cri_fd_sampler_cpu_seconds_total",
                       "cri_ephemeral_storage_walk_cpu_seconds_total", "cri_ephemeral_storage_walk_files_total",
                       "cri_ephemeral_storage_walk_errors_total", "cri_fd_sampler_pass_entries",
                       "cri_container_events_subscribed", "cri_container_events_stream_breaks_total",
                       "cri_container_events_received_total"),
                      "they are the background samplers' own bookkeeping, which the lean set leaves out to hold "
                      "what the usage panels and the alerts need")


def _common(panel, title: str, description: str, unit: str, queries, w: int, h: int, gap: LeanGap | None = None):
    if not (title and description and unit):
        raise ValueError(f"panel {title!r}: title, description and unit are all required")
    if gap:
        title, description = gap.mark(title, description)
    panel = panel.title(title).description(description).unit(unit).datasource(DATASOURCE).span(w).height(h)
    for ref, q in zip("ABCDEFGHIJ", queries):
        panel = panel.with_target(q.ref_id(ref))
    return panel


def graph(title: str, description: str, unit: str, *queries: prometheus.Dataquery, w: int = 12, h: int = 8,
          min_: float | None = None, max_: float | None = None, stack: bool = False,
          bars: bool = False, gap: LeanGap | None = None) -> timeseries.Panel:
    p: timeseries.Panel = _common(timeseries.Panel(), title, description, unit, queries, w, h, gap).fill_opacity(10 if not stack else 40)
    p = p.legend(cb.VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
                 .placement(common.LegendPlacement.BOTTOM).show_legend(True).calcs(["lastNotNull", "max"]))
    if min_ is not None:
        p = p.min(min_)
    if max_ is not None:
        p = p.max(max_)
    if stack:
        p = p.stacking(cb.StackingConfig().mode(common.StackingMode.NORMAL))
    if bars:
        p = p.draw_style(common.GraphDrawStyle.BARS)
    return p


def _mappings(mapping: dict[str, tuple[str, str]] | None) -> list:
    if not mapping:
        return []
    return [dm.ValueMap(options={k: dm.ValueMappingResult(text=text, color=color, index=i)
                                 for i, (k, (text, color)) in enumerate(mapping.items())})]


def single(title: str, description: str, unit: str, *queries: prometheus.Dataquery, w: int = 6, h: int = 4,
           mapping: dict[str, tuple[str, str]] | None = None, text_mode: str = "auto",
           thresholds: list[tuple[float | None, str]] | None = None) -> stat.Panel:
    """A stat panel of the latest value(s). `mapping`: value -> (text, color)."""
    p: stat.Panel = _common(stat.Panel(), title, description, unit, queries, w, h)
    p = (p.text_mode(common.BigValueTextMode(text_mode)).graph_mode(common.BigValueGraphMode.NONE)
         .color_mode(common.BigValueColorMode.BACKGROUND if (mapping or thresholds) else common.BigValueColorMode.NONE)
         .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    if mapping:
        p = p.mappings(_mappings(mapping))
    if thresholds:
        p = p.thresholds(db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE)
                         .steps([dm.Threshold(value=v, color=c) for v, c in thresholds]))
    return p


def states(title: str, description: str, unit: str, *queries: prometheus.Dataquery, w: int = 12, h: int = 6,
           mapping: dict[str, tuple[str, str]] | None = None) -> statetimeline.Panel:
    p: statetimeline.Panel = _common(statetimeline.Panel(), title, description, unit, queries, w, h).show_value(common.VisibilityMode.NEVER)
    if mapping:
        p = p.mappings(_mappings(mapping))
    return p


def bars(title: str, description: str, unit: str, *queries: prometheus.Dataquery, w: int = 12, h: int = 8,
         min_: float | None = None, max_: float | None = None, gap: LeanGap | None = None) -> bargauge.Panel:
    p: bargauge.Panel = _common(bargauge.Panel(), title, description, unit, queries, w, h, gap)
    p = (p.orientation(common.VizOrientation.HORIZONTAL).display_mode(common.BarGaugeDisplayMode.BASIC)
         .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    if min_ is not None:
        p = p.min(min_)
    if max_ is not None:
        p = p.max(max_)
    return p


UP_DOWN = {"1": ("UP", "green"), "0": ("DOWN", "red")}
TRUE_FALSE = {"1": ("true", "green"), "0": ("false", "red")}
PASS_FAIL = {"1": ("pass", "green"), "0": ("warn/fail", "red")}


def variables(extra: list | None = None) -> list:
    """datasource, job, instance (and the board's own), each chained on the previous."""

    def q(name: str, label: str, expr: str, multi: bool = False) -> db.QueryVariable:
        v = (db.QueryVariable(name).label(label).datasource(DATASOURCE)
             .query({"query": expr, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1})
             .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
        if multi:
            v = v.multi(True).include_all(True).all_value(".*")
        return v

    base = [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        q("job", "Job", "label_values(cri_up, job)"),
        q("instance", "Instance", 'label_values(cri_up{job="$job"}, instance)'),
    ]
    return base + [q(*args) if isinstance(args, tuple) else args for args in (extra or [])]


@dataclass
class Board:
    """A dashboard being assembled: rows of panels, numbered in order."""

    uid: str
    title: str
    description: str
    extra_variables: list = field(default_factory=list)
    _rows: list = field(default_factory=list)

    def row(self, title: str, *panels) -> "Board":
        self._rows.append((title, panels))
        return self

    def build(self) -> dict:
        d = (db.Dashboard(self.title).uid(self.uid).description(self.description).tags(TAGS)
             .editable().time("now-1h", "now").refresh("30s").timezone("browser")
             .tooltip(dm.DashboardCursorSync.CROSSHAIR).variables(variables(self.extra_variables))
             .link(db.DashboardLink("CRI dashboards").type(dm.DashboardLinkType.DASHBOARDS).tags(["cri-exporter"])
                   .as_dropdown(True).include_vars(True).keep_time(True)))
        next_id = 1
        for title, panels in self._rows:
            d = d.with_row(db.Row(title).id(next_id))
            next_id += 1
            for p in panels:
                d = d.with_panel(p.id(next_id))
                next_id += 1
        board: dict = json.loads(json.dumps(d.build(), cls=JSONEncoder))
        return board


def render(board: dict) -> str:
    """Stable text of a dashboard: sorted keys, two-space indent, final newline."""
    return json.dumps(board, indent=2, sort_keys=True) + "\n"
