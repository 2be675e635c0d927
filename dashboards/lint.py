"""The conventions Grafana's dashboard linter enforces, as plain functions the
tests call on the generated JSON (and, for the PromQL ones, on alert rules),
plus the PromQL that Prometheus 3 no longer reads as Prometheus 2 did.

The PromQL checks use a small tokenizer rather than a full parser: enough to
tell metric selectors from functions, keywords, label lists and matchers.
Whether a query *parses* is left to the real parser (promtool, Prometheus).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
RATE_FUNCTIONS = {"rate", "irate", "increase"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "atan2"}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
                "quantile"}

_TOKEN = re.compile(r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{?[A-Za-z_][A-Za-z0-9_]*\}?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<number>[0-9][0-9.eE+-]*[a-z]*)
  | (?P<punct>[(){}\[\],])
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=:@])
  | (?P<space>\s+)
""", re.VERBOSE)


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: str  # the text between the braces, "" if none
    functions: tuple[str, ...]  # enclosing function calls, outermost first


def tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot tokenize {expr[pos:pos + 20]!r} in {expr!r}")
        pos = m.end()
        if m.lastgroup is not None and m.lastgroup != "space":
            out.append((m.lastgroup, m.group()))
    return out


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of `expr` with the functions it sits in."""
    toks = tokens(expr)
    found: list[Selector] = []
    stack: list[str] = []  # one entry per open paren: function name, "(labels)" or "(group)"
    pending = ""  # `sum by (...) (`: the aggregation whose parenthesis comes after its label list
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if text == "(":
            stack.append(pending or "(group)")
            pending = ""
        elif text == ")":
            stack.pop()
        elif text == "[":  # range or subquery: skip to the matching ]
            while toks[i][1] != "]":
                i += 1
        elif kind == "ident" and text in LABEL_LIST_KEYWORDS and nxt == "(":
            stack.append("(labels)")
            i += 1
        elif kind == "ident" and text == "offset":
            i += 1  # its duration
        elif kind == "ident" and text in AGGREGATIONS and nxt in ("by", "without"):
            pending = text
        elif kind == "ident" and nxt == "(":
            stack.append(text)
            i += 1
        elif kind == "ident" and text not in KEYWORDS and "(labels)" not in stack[-1:]:
            matchers = ""
            if nxt == "{":
                j = i + 2
                while toks[j][1] != "}":
                    j += 1
                matchers = " ".join(t for _, t in toks[i + 2:j])
                i = j
            found.append(Selector(text, matchers, tuple(s for s in stack if not s.startswith("("))))
        elif text == "{":  # a selector without a metric name: {__name__=...}
            j = i
            while toks[j][1] != "}":
                j += 1
            found.append(Selector("", " ".join(t for _, t in toks[i + 1:j]),
                                  tuple(s for s in stack if not s.startswith("("))))
            i = j
        i += 1
    return found


def is_counter(metric: str) -> bool:
    return metric.endswith(COUNTER_SUFFIXES)


# `(c unless c offset w)`: the series of counter c born within w, whole. increase()
# loses the first value of a series that appears already above zero (it needs
# two samples); where a series is only ever born with its first event (the
# terminations counter), that value is the news (alerts/rules.py, _new_or_increase).
_BORN_WITHIN = re.compile(r"\((?P<sel>[A-Za-z_:][A-Za-z0-9_:]*(?:\{[^}]*\})?) unless (?P=sel) offset \w+\)")


def counter_problems(expr: str) -> list[str]:
    """Counters outside rate/irate/increase (but for the born-within idiom,
    _BORN_WITHIN), and those functions applied to non-counters."""
    problems = []
    for s in selectors(_BORN_WITHIN.sub("(vector(0))", expr)):
        wrapped = bool(RATE_FUNCTIONS & set(s.functions))
        if is_counter(s.metric) and not wrapped:
            problems.append(f"counter {s.metric} is not wrapped in rate/irate/increase")
        direct = s.functions[-1] if s.functions else ""
        if direct in RATE_FUNCTIONS and not is_counter(s.metric):
            problems.append(f"{direct}() of {s.metric}, which is not a counter")
    return problems


def _calls(expr: str, names: set[str]) -> list[str]:
    """The argument text of each call to one of `names`."""
    out = []
    for m in re.finditer(r"\b(" + "|".join(sorted(names)) + r")\s*\(", expr):
        depth, j = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(expr[j], 0)
            j += 1
        out.append(expr[m.end():j - 1])
    return out


def rate_interval_problems(expr: str) -> list[str]:
    """Every rate/irate/increase must use [$__rate_interval] as its range."""
    problems = []
    for args in _calls(expr, RATE_FUNCTIONS):
        ranges = re.findall(r"\[([^\]]*)\]", args)
        if ranges != ["$__rate_interval"]:
            problems.append(f"rate/irate/increase over {ranges or 'no range'} instead of [$__rate_interval]: {args}")
    return problems


_INTEGER_BOUND = re.compile(r"""\b(le|quantile)\s*(=|!=)\s*["'][+-]?\d+["']""")
_SUBQUERY = re.compile(r"\[\s*([0-9a-z]+)\s*:\s*([0-9a-z]+)\s*\]")


def prometheus3_problems(expr: str) -> list[str]:
    """What parses on Prometheus 2 but breaks or changes on 3 (its migration
    guide): holt_winters is gone, le/quantile values are stored as floats,
    and a subquery whose range equals its step holds one point, as ranges no
    longer include their left boundary."""
    problems = []
    if re.search(r"\bholt_winters\s*\(", expr):
        problems.append("holt_winters() is gone in Prometheus 3 (double_exponential_smoothing, behind a feature flag)")
    for m in _INTEGER_BOUND.finditer(expr):
        problems.append(f"{m.group()}: Prometheus 3 stores {m.group(1)} as a float (1 -> 1.0), so this matches nothing")
    for m in _SUBQUERY.finditer(expr):
        if m.group(1) == m.group(2):
            problems.append(f"subquery {m.group()} holds one point in Prometheus 3 (ranges exclude their start)")
    return problems


def panels(board: dict) -> list[dict]:
    """Every panel that is not a row (rows' nested panels included)."""
    out = []
    for p in board.get("panels", []):
        if p.get("type") == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def board_problems(board: dict) -> list[str]:
    """Everything wrong with one dashboard by the conventions; [] when clean."""
    problems: list[str] = []
    variables = board.get("templating", {}).get("list", [])
    names = [v.get("name") for v in variables]
    ds_vars = [v for v in variables if v.get("type") == "datasource"]
    if len(ds_vars) != 1 or ds_vars[0].get("name") != "datasource" or ds_vars[0].get("query") != "prometheus":
        problems.append(f"want exactly one Prometheus datasource variable named 'datasource', got {ds_vars}")
    for name in ("job", "instance"):
        if not any(v.get("name") == name and v.get("type") == "query" for v in variables):
            problems.append(f"no query variable {name!r}")
    for v in variables:
        if v.get("type") == "query" and v.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"variable {v.get('name')} does not use ${{datasource}}")
    ids = [p.get("id") for p in board.get("panels", [])]
    if len(ids) != len(set(ids)) or None in ids:
        problems.append(f"panel ids missing or repeated: {ids}")
    defined = set(names) | {"__rate_interval", "__interval", "__range"}
    for p in panels(board):
        where = f"panel {p.get('title')!r}"
        if not (p.get("title") or "").strip():
            problems.append(f"{where}: no title")
        if not (p.get("description") or "").strip():
            problems.append(f"{where}: no description")
        if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            problems.append(f"{where}: no unit")
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{where}: datasource is not ${{datasource}}")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"{where}: no queries")
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)) or not all(refs):
            problems.append(f"{where}: refIds missing or repeated: {refs}")
        for t in targets:
            expr = t.get("expr", "")
            here = f"{where} {t.get('refId')}"
            if t.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{here}: query datasource is not ${{datasource}}")
            for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expr):
                if var not in defined:
                    problems.append(f"{here}: undefined variable ${var}")
            problems += [f"{here}: {x}" for x in
                         counter_problems(expr) + rate_interval_problems(expr) + prometheus3_problems(expr)]
            for s in selectors(expr):
                if 'job = "$job"' not in s.matchers or 'instance = "$instance"' not in s.matchers:
                    problems.append(f"{here}: selector {s.metric}{{{s.matchers}}} is not scoped to $job and $instance")
    return problems


# A panel that reads families the lean profile (cri_exporter/metric_profiles.py) leaves
# out says so where an operator looks: its title ends with DEFAULT_ONLY_TITLE and its
# description holds DEFAULT_ONLY_NOTE, the families and why (dashboards.common builds both).
DEFAULT_ONLY_TITLE = " (default profile)"
DEFAULT_ONLY_NOTE = "Empty under the lean profile"


def panel_metrics(panel: dict) -> set[str]:
    """Metric names every selector of the panel's queries names."""
    return {s.metric for t in panel.get("targets") or [] for s in selectors(substitute(t.get("expr", ""), {}))}


def is_marked_default_only(panel: dict) -> bool:
    return (panel.get("title") or "").endswith(DEFAULT_ONLY_TITLE) or DEFAULT_ONLY_NOTE in (panel.get("description") or "")


def profile_problems(board: dict, in_profile: Callable[[str], bool]) -> list[str]:
    """A panel may read a family outside the profile (`in_profile(name)` false) only
    when marked so, naming each such family in its description; a marked panel must
    need the mark for every query (else "empty" misleads); a template variable must
    stay inside (outside it, the whole board is empty)."""
    problems = []
    for p in panels(board):
        where = f"panel {p.get('title')!r}"
        outside = sorted(m for m in panel_metrics(p) if not in_profile(m))
        title, description = p.get("title") or "", p.get("description") or ""
        if outside and not is_marked_default_only(p):
            problems.append(f"{where}: reads {outside}, outside the lean profile, and is not marked "
                            f"(title ending {DEFAULT_ONLY_TITLE!r}, description saying {DEFAULT_ONLY_NOTE!r})")
            continue
        if not is_marked_default_only(p):
            continue
        if not outside:
            problems.append(f"{where}: marked as empty under the lean profile, but reads only families it serves")
            continue
        if not title.endswith(DEFAULT_ONLY_TITLE):
            problems.append(f"{where}: reads {outside}, outside the lean profile: its title must end {DEFAULT_ONLY_TITLE!r}")
        if DEFAULT_ONLY_NOTE not in description:
            problems.append(f"{where}: reads {outside}, outside the lean profile: its description must say "
                            f"{DEFAULT_ONLY_NOTE!r} and why")
        unnamed = [m for m in outside if m not in description]
        if unnamed:
            problems.append(f"{where}: its description does not name {unnamed}, which the lean profile leaves out")
        for t in p.get("targets") or []:  # "empty" must hold for every line of the panel
            if all(in_profile(s.metric) for s in selectors(substitute(t.get("expr", ""), {}))):
                problems.append(f"{where} {t.get('refId')}: reads only families of the lean profile, so the marked "
                                "panel is not empty under it: move that query to an unmarked panel")
    for v in board.get("templating", {}).get("list", []):
        q = v.get("query")
        expr = q.get("query", "") if isinstance(q, dict) else q if isinstance(q, str) else ""
        if v.get("type") != "query" or not expr.startswith("label_values("):
            continue
        inner = expr[len("label_values("):].rsplit(",", 1)[0] if "," in expr else expr[len("label_values("):-1]
        outside = sorted(s.metric for s in selectors(substitute(inner, {})) if not in_profile(s.metric))
        if outside:
            problems.append(f"variable {v.get('name')!r}: reads {outside}, outside the lean profile: "
                            "every panel of the board would be empty under it")
    return problems


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variable interpolation, for evaluating a query outside Grafana."""
    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        return values[name] if name in values else m.group(0)
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", one, expr)
