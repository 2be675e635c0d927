"""Rows as text: cells, column widths for the terminal's width, JSON lines.

Names come from whoever created the pod: over CRI a pod or container name may
hold an escape sequence, a newline or a bidi override (containerd accepts them
and hands them back verbatim, seen on 1.6.20). Printed raw, a name could move
the cursor, retitle or recolour the terminal, or hide rows. Kubernetes names
are DNS-1123 (lowercase ASCII letters, digits, '-', '.'), so every character
outside printable ASCII is shown escaped (\\x1b, \\u202e) and a backslash as
\\\\: what is shown is unambiguous and one column per character, so the
table stays aligned.

Width: at 80 columns every column is kept and the names share what the
numbers leave (about 26 columns), each cut in the middle ("coredn~x2x9k":
a pod's replica suffix tells pods apart, its start says whose it is).
Narrower, columns go in this order: IO, memory, CPU pressure, the memory
and CPU limit shares, throttling, the namespace.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Iterable

from cri_exporter.top.rows import Row

# Cell styles: rows.py knows values, the screen knows colours.
PLAIN, WARN, BAD = "", "warn", "bad"

ELLIPSIS = "~"


def sanitize(text: str) -> str:
    """Printable ASCII as is; a backslash and everything else escaped."""
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def shorten(text: str, width: int) -> str:
    """`text` cut in the middle to `width` columns (it is sanitized: one column a character)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = width // 2
    tail = width - 1 - head
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


def cores(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "-"
    if v < 9.995:
        return f"{v:.2f}"
    return f"{v:.1f}" if v < 99.95 else f"{v:.0f}"


def size(v: int | None) -> str:
    """Bytes in binary units, at most five characters: 812K, 1.5G, 1023M."""
    if v is None:
        return "-"
    value = float(v)
    for unit in "BKMGTP":
        if value < 1024 or unit == "P":
            if unit == "B":
                return f"{int(value)}B"
            return f"{value:.1f}{unit}" if value < 9.95 else f"{value:.0f}{unit}"
        value /= 1024
    return "-"  # not reached


def percent(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "-"
    return f"{v * 100:.0f}%" if v < 9.995 else ">999%"


def count(v: int | None, at_least: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v}+" if at_least else str(v)


def _level(v: float | None, warn: float, bad: float) -> str:
    if v is None:
        return PLAIN
    return BAD if v >= bad else WARN if v >= warn else PLAIN


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    cell: Callable[[Row], tuple[str, str]]  # (text, style)
    name: bool = False  # a name column: shrinks, cut in the middle, left-aligned
    min_width: int = 0
    max_width: int = 0
    drop: int = 0  # higher goes first when the terminal is too narrow; 0 never


def _psi(resource: str) -> Callable[[Row], tuple[str, str]]:
    def cell(r: Row) -> tuple[str, str]:
        v = (r.pressure or {}).get(resource)
        return percent(v), _level(v, 0.05, 0.2)
    return cell


# Why a row's cgroup was not read (sampler.Source.reason) -> its flag and legend.
FLAGS = {
    "permission_denied": ("!", "cgroup unreadable: CPU and memory from CRI"),
    "vm_handler": ("*", "VM runtime handler: CPU and memory from CRI"),
    "not_found": ("?", "no cgroup found: CPU and memory from CRI"),
    "not_running": ("x", "not running"),
}


def _flag(r: Row) -> tuple[str, str]:
    if r.reason is not None:
        return FLAGS[r.reason][0], WARN
    if r.state not in ("running", "ready"):
        return FLAGS["not_running"][0], PLAIN
    return " ", PLAIN

COLUMNS = (
    Column("flag", " ", _flag),
    Column("namespace", "NAMESPACE", lambda r: (sanitize(r.namespace), PLAIN), name=True, min_width=7, max_width=20, drop=1),
    Column("pod", "POD", lambda r: (sanitize(r.pod), PLAIN), name=True, min_width=10, max_width=48),
    Column("container", "CONTAINER", lambda r: (sanitize(r.container or ""), PLAIN), name=True, min_width=7, max_width=24),
    Column("cpu", "CPU", lambda r: (cores(r.cpu_cores), PLAIN)),
    Column("cpu_limit", "%LIM", lambda r: (percent(r.cpu_limit_ratio), _level(r.cpu_limit_ratio, 0.9, 2.0)), drop=4),
    Column("throttle", "THR%", lambda r: (percent(r.cpu_throttled_ratio), _level(r.cpu_throttled_ratio, 0.05, 0.25)), drop=2),
    Column("memory", "MEM", lambda r: (size(r.memory_working_set_bytes), PLAIN)),
    Column("memory_limit", "%LIM", lambda r: (percent(r.memory_limit_ratio), _level(r.memory_limit_ratio, 0.8, 0.9)), drop=3),
    Column("oom", "OOM", lambda r: (count(r.oom_kills, r.oom_kills_at_least), BAD if r.oom_kills else PLAIN)),
    Column("restarts", "RST", lambda r: (count(r.restarts), WARN if r.restarts else PLAIN)),
    Column("psi_cpu", "PCPU", _psi("cpu"), drop=5),
    Column("psi_memory", "PMEM", _psi("memory"), drop=6),
    Column("psi_io", "PIO", _psi("io"), drop=7),
)

# Which column each --sort key highlights.
SORT_COLUMN = {"cpu": "cpu", "memory": "memory", "throttle": "throttle", "pressure": "psi_cpu", "restarts": "restarts"}


@dataclass
class Table:
    """Columns chosen for a width, with their widths, and each row's cells."""

    columns: list[Column]
    widths: list[int]
    cells: list[list[tuple[str, str]]]

    def header(self) -> str:
        # A name column narrower than its header cuts it, without a mark: NAMESPA.
        return self._join(c.header[:w] if c.name else c.header for c, w in zip(self.columns, self.widths))

    def line(self, i: int) -> str:
        return self._join(text for text, _ in self.cells[i])

    def spans(self, i: int) -> list[tuple[int, str, str]]:
        """(column offset, text, style) of row i's cells, padded to their widths."""
        out, x = [], 0
        for col, width, (text, style) in zip(self.columns, self.widths, self.cells[i]):
            out.append((x, self._pad(col, text, width), style))
            x += width + 1
        return out

    def offset(self, key: str) -> tuple[int, int] | None:
        """(start, width) of the column `key`, if shown."""
        x = 0
        for col, width in zip(self.columns, self.widths):
            if col.key == key:
                return x, width
            x += width + 1
        return None

    def _join(self, texts: Iterable[str]) -> str:
        return " ".join(self._pad(c, t, w) for c, t, w in zip(self.columns, texts, self.widths)).rstrip()

    @staticmethod
    def _pad(col: Column, text: str, width: int) -> str:
        if col.name or col.key == "flag":
            return shorten(text, width).ljust(width)
        return text.rjust(width)


def make_table(rows: list[Row], width: int | None, pods: bool) -> Table:
    """The columns that fit in `width` (None: no limit, every name whole)."""
    columns = [c for c in COLUMNS if not (pods and c.key == "container")]
    all_cells = [[c.cell(r) for c in columns] for r in rows]
    while True:
        natural = [max([len(c.header)] + [len(cells[i][0]) for cells in all_cells]) for i, c in enumerate(columns)]
        widths = _fit(columns, natural, width)
        if widths is not None:
            break
        droppable = [c for c in columns if c.drop]
        if not droppable:
            widths = [min(n, c.max_width) if c.name else n for c, n in zip(columns, natural)]
            break
        gone = columns.index(max(droppable, key=lambda c: c.drop))
        del columns[gone]
        for cells in all_cells:
            del cells[gone]
    return Table(columns, widths, all_cells)


def _fit(columns: list[Column], natural: list[int], width: int | None) -> list[int] | None:
    """Widths that fit, shrinking only the names; None if even their minimums do not."""
    wanted = [min(n, c.max_width) if c.name else n for c, n in zip(columns, natural)]
    if width is None:
        return [n for n in natural]
    room = width - (len(columns) - 1)  # one space between columns
    fixed = sum(w for c, w in zip(columns, wanted) if not c.name)
    names = [i for i, c in enumerate(columns) if c.name]
    for_names = room - fixed
    mins = [min(columns[i].min_width, wanted[i]) for i in names]
    if for_names < sum(mins):
        return None
    if sum(wanted[i] for i in names) <= for_names:
        return wanted
    # Each name gets its minimum, the rest shared in proportion to what it lacks.
    widths = list(wanted)
    lacks = [wanted[i] - m for i, m in zip(names, mins)]
    spare = for_names - sum(mins)
    total_lack = sum(lacks) or 1
    for i, m, lack in zip(names, mins, lacks):
        widths[i] = m + lack * spare // total_lack
    leftover = for_names - sum(widths[i] for i in names)
    for i in sorted(names, key=lambda i: wanted[i] - widths[i], reverse=True)[:leftover]:
        widths[i] += 1
    return widths


def legend(rows: Iterable[Row]) -> list[str]:
    """What the flags of these rows mean, one line each."""
    seen = {_flag(r)[0] for r in rows}
    return [f"{flag} {text}" for flag, text in FLAGS.values() if flag in seen]


def json_row(row: Row) -> str:
    """One row as a JSON object on one line: base units and ratios (0-1), null where unknown."""
    out: dict[str, object] = {
        "time": _round(row.time, 3), "kind": row.kind, "namespace": row.namespace, "pod": row.pod,
    }
    if row.container is not None:
        out["container"] = row.container
    out.update({
        "id": row.id, "state": row.state, "source": row.source, "note": row.note,
        "window_seconds": _round(row.window_seconds, 4),
        "cpu_usage_seconds": _round(row.cpu_usage_seconds, 9),
        "cpu_cores": _round(row.cpu_cores, 4),
        "cpu_limit_cores": _round(row.cpu_limit_cores, 4),
        "cpu_limit_ratio": _round(row.cpu_limit_ratio, 4),
        "cpu_throttled_ratio": _round(row.cpu_throttled_ratio, 4),
        "memory_working_set_bytes": row.memory_working_set_bytes,
        "memory_limit_bytes": row.memory_limit_bytes,
        "memory_limit_ratio": _round(row.memory_limit_ratio, 4),
        "oom_kills": row.oom_kills,
        "oom_kills_at_least": row.oom_kills_at_least,
        "restarts": row.restarts,
        "last_terminated_reason": row.last_terminated_reason,
    })
    for resource, v in (row.pressure or {"cpu": None, "memory": None, "io": None}).items():
        out[f"pressure_{resource}_ratio"] = _round(v, 4)
    # ensure_ascii: every control character and non-ASCII letter of a hostile name is a \\u escape.
    return json.dumps(out, ensure_ascii=True, separators=(",", ":"))


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)
