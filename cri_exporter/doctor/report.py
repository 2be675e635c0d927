"""Rendering a Report: text for a terminal or a pasted ticket, JSON for tools.

Text is plain ASCII and wraps nothing, so it survives being pasted into an
issue; colour is added only when writing to a TTY (and NO_COLOR is unset).
Both renderings redact every string of the report first (a finding may
quote a config line with a password in it): whatever prints, serves or
bundles a report goes through here.
"""
from __future__ import annotations

import dataclasses
import json

from cri_exporter.doctor.model import CheckResult, Finding, Report, Severity, Status
from cri_exporter.redact import redact_text

_COLOURS = {Status.PASS: "32", Status.WARN: "33", Status.FAIL: "31;1", Status.SKIP: "2"}
SCHEMA_VERSION = 1


def _indent(label: str, text: str, pad: str) -> list[str]:
    lines = text.splitlines() or [""]
    first = f"{pad}{label:<5} {lines[0]}"
    return [first] + [f"{pad}      {line}" for line in lines[1:]]


def _text(s: str) -> str:
    """Redacted, and printable as UTF-8: a file name that is not UTF-8 reaches
    a finding as surrogate escapes, shown here as \\xNN."""
    return redact_text(s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))


def redacted(report: Report) -> Report:
    """The report with secrets redacted from every text a finding carries."""
    def clean(f: Finding) -> Finding:
        return Finding(f.status, _text(f.summary), _text(f.seen), _text(f.why), _text(f.fix),
                       tuple(_text(r) for r in f.refs), _text(f.restart_needed))

    return dataclasses.replace(
        report, results=[dataclasses.replace(r, finding=clean(r.finding)) for r in report.results],
        host_root=_text(report.host_root), endpoint=_text(report.endpoint))


def render_text(report: Report, colour: bool = False) -> str:
    report = redacted(report)
    out = [f"cri-exporter doctor  host-root={report.host_root}  runtime-endpoint={report.endpoint or '-'}"]
    if report.confinement is not None:
        out.append(confinement_line(report.confinement))
    width = max((len(r.id) for r in report.results), default=10)
    area = None
    order: dict[str, int] = {}
    for r in report.results:
        order.setdefault(r.area, len(order))
    for r in sorted(report.results, key=lambda r: order[r.area]):
        if r.area != area:
            area = r.area
            out += ["", area]
        f = r.finding
        tag = f.status.value.upper().ljust(4)
        if colour:
            tag = f"\x1b[{_COLOURS[f.status]}m{tag}\x1b[0m"
        out.append(f"  {tag}  {r.id:<{width}}  {f.summary}")
        if f.status in (Status.WARN, Status.FAIL):
            pad = " " * 8
            if f.seen:
                out += _indent("seen:", f.seen, pad)
            if f.why:
                out += _indent("why:", f.why, pad)
            if f.fix:
                out += _indent("fix:", f.fix, pad)
            for ref in f.refs:
                out += _indent("ref:", ref, pad)
    c = report.counts()
    out += ["", f"summary: {c['pass']} pass, {c['warn']} warn, {c['fail']} fail, {c['skip']} skip"
                f" ({len(report.results)} checks in {report.duration_seconds:.2f}s)"]
    return "\n".join(out) + "\n"


def confinement_line(c: dict) -> str:
    """One line an operator can trust "read-only" by (or learn they cannot)."""
    state = c.get("state", "")
    if state in ("enforced", "partial"):
        line = (f"confinement: {state} (Landlock ABI {c.get('abi')}): writes nothing but a --bundle file, reads "
                "nothing outside the host root but its own files, and none of the host's secrets its checks do not need")
        if c.get("limits"):
            line += f"; limits: {'; '.join(c['limits'])}"
        return line
    if state == "disabled":
        return "confinement: disabled (--no-confine): read-only by the doctor's own code only"
    return (f"confinement: {state or 'unknown'} ({c.get('reason') or 'no reason given'}): ran unconfined, "
            "read-only by the doctor's own code only")


def render_json(report: Report) -> str:
    data = redacted(report).to_dict()
    data["schema_version"] = SCHEMA_VERSION
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def parse_json(text: str | bytes) -> Report:
    """The Report that render_json wrote (serve mode reads its doctor child's
    output this way). Raises ValueError on anything else."""
    try:
        data = json.loads(text)
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"schema_version {data.get('schema_version')!r}, expected {SCHEMA_VERSION}")
        summary = data["summary"]
        results = [
            CheckResult(c["id"], c["area"], Severity(c["severity"]),
                        Finding(Status(c["status"]), c["summary"], c["detail"], c["why"], c["fix"], tuple(c["refs"]),
                                str(c.get("restart_needed", ""))))
            for c in data["checks"]
        ]
        confinement = data.get("confinement")
        return Report(results, summary["host_root"], summary["runtime_endpoint"], float(summary["started_at"]),
                      float(summary["duration_seconds"]), confinement if isinstance(confinement, dict) else None)
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"not a doctor report: {type(err).__name__}: {err}") from err
