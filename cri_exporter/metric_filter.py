"""Which metric families /metrics serves: `--metrics-allow` / `--metrics-deny`.

The series budget of a fleet (issue 18): at some 64 series a container a
1,000-node fleet carries millions, so operators choose families the way
kube-state-metrics' --metric-allowlist / --metric-denylist let them.

- Each flag is a comma-separated list of regular expressions, each matched
  against the whole family name as the `# TYPE` line shows it (counters with
  their `_total`), like kube-state-metrics'.
- Both may be given: a family is served when it matches the allow list (or
  there is none) and does not match the deny list. Deny wins, so "all the
  container families but block I/O" is one allow and one deny.
- The scrape-health families (HEALTH) are never filtered: without `cri_up`
  and `cri_scrape_collector_success` a failing runtime or source would look
  like a quiet node, and the alerts built on them could not fire. A deny
  pattern that names one is said in the log at start, never silently obeyed.

Collectors and the scrape's steps ask `wants(name)` before doing the work
for a family (a cgroup file, a CRI call, a pod netns read); the scrape
filters every family once more at the end, so a denied name never appears
even from a collector that does not ask.
"""
from __future__ import annotations

import re
import threading
from typing import Iterable

from cri_exporter.exposition import AnyFamily

# Always served whatever the flags say (see the module docstring).
HEALTH = frozenset({
    "cri_up",
    "cri_scrape_collector_success",
    "cri_scrape_collector_duration_seconds",
    "cri_scrape_step_duration_seconds",
})


class MetricFilterError(ValueError):
    """A pattern that is not a regular expression; the message names the flag."""


def exposed_name(metric: AnyFamily) -> str:
    """The family's name on its `# TYPE` line: counters carry `_total`."""
    return metric.name + "_total" if metric.type == "counter" else metric.name


def _compile(flag: str, spec: str | None) -> re.Pattern | None:
    patterns = [p.strip() for p in (spec or "").split(",") if p.strip()]
    if not patterns:
        return None
    for p in patterns:
        try:
            re.compile(p)
        except re.error as err:
            raise MetricFilterError(f"{flag}: {p!r} is not a regular expression: {err}") from None
    return re.compile("|".join(f"(?:{p})" for p in patterns))


class MetricFilter:
    """allow/deny as given at start; `wants()` is cached per name (the set of
    family names is small and fixed, a scrape asks for each of them)."""

    def __init__(self, allow: str | None = None, deny: str | None = None, deny_names: Iterable[str] = ()):
        """`deny_names`: exact names denied besides the patterns (a group such
        as --no-pod-cgroup-metrics)."""
        self.allow_spec, self.deny_spec = allow or "", deny or ""
        self._allow = _compile("--metrics-allow", allow)
        self._deny = _compile("--metrics-deny", deny)
        self._deny_names = frozenset(deny_names)
        self._cache: dict[str, bool] = {}
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """False when everything is served (no work to skip, nothing to filter)."""
        return self._allow is not None or self._deny is not None or bool(self._deny_names)

    def wants(self, name: str) -> bool:
        """Whether family `name` (as on its # TYPE line) is served."""
        found = self._cache.get(name)
        if found is None:
            found = name in HEALTH or not self._denied(name)
            with self._lock:
                self._cache[name] = found
        return found

    def wants_any(self, names: Iterable[str]) -> bool:
        return any(self.wants(n) for n in names)

    def _denied(self, name: str) -> bool:
        if name in self._deny_names:
            return True
        if self._allow is not None and not self._allow.fullmatch(name):
            return True
        return self._deny is not None and bool(self._deny.fullmatch(name))

    def health_named_by_deny(self) -> list[str]:
        """The health families a deny pattern names (kept anyway; said at start)."""
        return sorted(n for n in HEALTH if self._deny is not None and self._deny.fullmatch(n))

    def filter(self, metrics: Iterable[AnyFamily]) -> list[AnyFamily]:
        """The safety net: drop every family not wanted, whoever built it."""
        if not self.active:
            return metrics if isinstance(metrics, list) else list(metrics)
        return [m for m in metrics if self.wants(exposed_name(m))]


EVERYTHING = MetricFilter()
