"""Every termination of every container, counted once, with its reason.

A container's instances are numbered by the kubelet (the attempt: 0, 1, 2...
within one pod, by pod uid and container name), so a termination is the pair
(pod uid, container name, attempt) and counting it twice is impossible
whatever source reports it, and however often. Two sources feed the tracker:

- the poll: every scrape's inventory (ListContainers). A newly exited
  instance is asked ContainerStatus for its reason and exit code. An attempt
  the poll never saw exit (the kubelet had already removed it, as it does a
  crash-looping container's older instances, or the whole pod went away) is
  still a termination: it is counted with reason "Unknown" when it has been
  missing for two observations in a row (so an event arriving late names it
  first);
- the runtime's event stream (GetContainerEvents), only where the runtime
  broadcasts events to every subscriber (`broadcasts_events`): a STOPPED
  event carries the container's status, so even instances removed between
  two scrapes are counted with their real reason.

What was already exited when the exporter started (its first inventory, and
any event about an exit from before its start) is the baseline: not counted, so a restarted exporter counts nothing twice (its
counters start again from zero, which Prometheus reads as a reset). A broken
event stream loses nothing: the poll runs on every scrape regardless.

containerd 1.6.20 handles a container's exit and the kernel's OOM event
separately: under load ContainerStatus says "Error" (137) first and
"OOMKilled" a moment later. An exit by SIGKILL is therefore counted only
once it is SETTLE_SECONDS old (or its instance is gone), whatever source
reported it first.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Callable

import structlog

from cri_exporter.cri import CriError, model
from cri_exporter.inventory import ContainerIdentity, Inventory

log = structlog.get_logger(__name__)

SETTLE_SECONDS = 10.0
# A pod no longer listed keeps its counters this long, so Prometheus scrapes
# the terminations of its last moments (its containers stopped on deletion).
RETAIN_SECONDS = 600.0
# Attempts presumed terminated unseen in one observation of one container, at
# most (an attempt number is the runtime's word; a wild one must not loop).
MAX_GAP = 1000

UNKNOWN = "Unknown"
# Exit codes that mean something on their own, each its own label value; the
# rest are "other", so a program exiting with computed codes cannot make 256
# series per reason. 1/2: generic failure and misuse; 126/127: not executable
# or not found; 128+n: killed by signal n (130 SIGINT, 134 SIGABRT, 137
# SIGKILL: the OOM killer and the kubelet's grace period ending, 139 SIGSEGV,
# 143 SIGTERM).
EXIT_CODES = frozenset({0, 1, 2, 126, 127, 130, 134, 137, 139, 143})
_REASON = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")


def exit_code_label(code: int | None) -> str:
    if code is None:
        return "unknown"
    return str(code) if code in EXIT_CODES else "other"


def reason_label(reason: str) -> str:
    """The runtime's reason (OOMKilled, Error, Completed, ContainerCannotRun, StartError...);
    an empty or odd one (not a CamelCase word) is "Other"."""
    if not reason:
        return UNKNOWN
    return reason if _REASON.match(reason) else "Other"


def broadcasts_events(version: model.RuntimeVersion) -> bool:
    """Whether subscribing to GetContainerEvents takes nothing from the kubelet.

    containerd 2.x broadcasts every event to every subscriber (2.1.9: two
    subscribers both got all 15 events). containerd 1.7 hands each event to
    one subscriber only (1.7.24: 8 and 7 of 15, none in common; containerd
    issue 7318): a second subscriber steals events from the kubelet's evented
    PLEG. CRI-O, read in its source (server/container_events.go; not in the
    lab: Debian packages no CRI-O):
    - 1.26.0-1.27.x: every subscriber's call ranges over one shared channel,
      so each event reaches one of them: as containerd 1.7, never subscribed;
    - 1.28.0-1.32.x: one goroutine sends each event to every subscriber
      (commit 8b230dec7e, "clients connected to container event stream now
      receive the same data", first in v1.28.0), but a subscriber going away
      can make CRI-O panic on its WaitGroup (cri-o issue 9004; the fix,
      32854c9d19, is in v1.33.0 and no 1.32 release): not subscribed;
    - from 1.33.0: broadcasts without that race: subscribed. Its events carry
      the pod's container statuses as containerd's do. With enable_pod_events
      off (its default) the stream ends at once, empty: the watcher asks again
      a minute later and the poll counts everything meanwhile.
    """
    m = re.match(r"v?(\d+)\.(\d+)", version.runtime_version)
    if m is None:
        return False
    release = (int(m.group(1)), int(m.group(2)))
    if version.runtime_name == "containerd":
        return release >= (2, 0)
    if version.runtime_name == "cri-o":
        return release >= (1, 33)
    return False


def _settled(status: model.ContainerStatus, now: float) -> bool:
    return (status.exit_code != 137 or status.reason == "OOMKilled"
            or now - status.finished_at_ns / 1e9 > SETTLE_SECONDS)


_NONE: frozenset[int] = frozenset()
# (a,) for the attempts most containers are at: a track's `started` is one of
# these, not a tuple of its own (48 bytes a container, made anew at every poll).
_ONE = tuple((a,) for a in range(256))


def _attempts(attempts) -> tuple[int, ...]:
    t = tuple(attempts)
    return _ONE[t[0]] if len(t) == 1 and 0 <= t[0] < 256 else t


@dataclass(slots=True)
class _Track:
    """One container of one pod (pod uid, container name): which attempts are accounted.

    Immutable small values, shared when empty: one is kept per container of the
    node (an empty set costs 216 bytes; with sets the tracker held 4.7 MB at
    5,000 containers). Its identity is the inventory's own ContainerIdentity
    (the one its scrapes keep for the container anyway), not a copy: three
    strings of its own were 16 bytes more a container."""

    ident: ContainerIdentity
    floor: int | None = None  # attempts below it are history (the baseline); None: the poll has not seen it yet
    accounted: frozenset[int] = _NONE  # at or above the floor
    started: tuple[int, ...] = ()  # attempts last listed running or exited, not accounted
    suspects: tuple[int, ...] = ()  # missing last time, not accounted
    pending: dict[int, model.ContainerStatus] | None = None  # exited, not settled
    last_listed: float = 0.0

    @classmethod
    def of(cls, ident: ContainerIdentity, **kw) -> "_Track":
        return cls(ident, **kw)

    @property
    def namespace(self) -> str:
        return self.ident.namespace

    @property
    def pod(self) -> str:
        return self.ident.pod

    @property
    def container(self) -> str:
        return self.ident.container


StatusFetch = Callable[[str], "model.ContainerStatus | None"]


class TerminationTracker:
    """Counts of terminations by container identity, reason and exit code.

    Thread-safe: the event watcher's thread and the scrape's call in.
    """

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self.started_at = clock()
        self._lock = threading.Lock()
        self._tracks: dict[tuple[str, str], _Track] = {}
        self.counts: dict[ContainerIdentity, dict[tuple[str, str], int]] = {}
        self.baselined = False
        self.counted_unseen = 0
        self._runtime: str | None = None

    # ---- sources ----

    def observe(self, inv: Inventory, fetch: StatusFetch, runtime: str = "") -> None:
        """One poll: `inv` is a fresh ListContainers; `fetch(container_id)` is
        ContainerStatus, or None when it cannot be had now (asked again next time).
        `runtime`: the endpoint `inv` came from. Another one than last time (the
        exporter found the node's runtime at another socket) is another world:
        its first inventory is a baseline again."""
        now = self._clock()
        groups: dict[tuple[str, str], dict[int, model.Container]] = {}
        for c in inv.containers:
            listed = groups.setdefault((inv.pod_uid(c), c.k8s_name), {})
            old = listed.get(c.attempt)
            # two instances with one attempt number: the newest speaks
            if old is None or c.created_at_ns > old.created_at_ns:
                listed[c.attempt] = c
        with self._lock:
            if runtime != self._runtime:
                if self._runtime is not None:
                    self._tracks.clear()
                    self.baselined = False
                self._runtime = runtime
            baseline = not self.baselined
            if baseline:
                log.debug("termination baseline", containers=len(inv.containers))
            canonical: dict[ContainerIdentity, ContainerIdentity] | None = None
            for key, listed in groups.items():
                track = self._tracks.get(key)
                if track is None:
                    if canonical is None:  # the inventory's identities, which its scrapes keep
                        canonical = {i: i for i in inv.current_containers}
                    ident = inv.container_identity(next(iter(listed.values())))
                    track = self._tracks[key] = _Track.of(canonical.get(ident, ident))
                track.last_listed = now
                if track.floor is None:
                    track.floor = max(listed) if baseline else 0
                    if baseline:
                        done = {a for a, c in listed.items() if c.state == "exited" and a >= track.floor}
                        if done:
                            track.accounted = track.accounted | done
                self._observe_track(track, listed, fetch, now)
            for key, track in list(self._tracks.items()):
                if key in groups:
                    continue
                if track.floor is not None:
                    self._observe_track(track, {}, fetch, now)
                if now - track.last_listed > RETAIN_SECONDS:
                    del self._tracks[key]
            if self.counts:
                counted = {(i.namespace, i.pod, i.container) for i in self.counts}
                live = {k for t in self._tracks.values() if (k := (t.namespace, t.pod, t.container)) in counted}
                for ident in [i for i in self.counts if (i.namespace, i.pod, i.container) not in live]:
                    del self.counts[ident]
            self.baselined = True

    def event(self, ev: model.ContainerEvent) -> None:
        """A GetContainerEvents message: a STOPPED one with the container's status is counted."""
        if ev.type != "stopped" or ev.status is None or ev.status.state != "exited":
            return
        if ev.status.finished_at_ns / 1e9 < self.started_at:
            # Baseline. containerd 2.1.9 queues the events no one has taken yet and
            # hands them to the next subscriber: exits from before the exporter started.
            return
        ident = ContainerIdentity(ev.namespace, ev.pod, ev.container)
        with self._lock:
            track = self._tracks.get((ev.pod_uid, ev.container))
            if track is None:
                track = self._tracks[(ev.pod_uid, ev.container)] = _Track.of(ident, last_listed=self._clock())
            a = ev.attempt
            if a in track.accounted or (track.floor is not None and a < track.floor):
                return
            if _settled(ev.status, self._clock()):
                self._count(track, a, ev.status)
            else:
                track.pending = {**(track.pending or {}), a: ev.status}

    # ---- the poll, one container ----

    def _observe_track(self, track: _Track, listed: dict[int, model.Container], fetch: StatusFetch,
                       now: float) -> None:
        floor = track.floor or 0
        if (len(listed) == 1 and not track.suspects and not track.pending
                and (c := next(iter(listed.values()))).attempt == floor and c.state != "exited"
                and all(a == floor for a in track.started)):
            # the common case, a live first instance: nothing ended
            if c.state == "running" and not track.started:
                track.started = _attempts((floor,))
            return
        for a, c in listed.items():
            # the live floor: counting one attempt may raise it past others (and forget them)
            if a < (track.floor or 0) or a in track.accounted or c.state != "exited":
                continue
            status = fetch(c.id)
            if status is None or status.state != "exited":
                continue  # asked again next time; if it goes meanwhile, it is counted as unseen
            if _settled(status, now):
                self._count(track, a, status)
            else:
                track.pending = {**(track.pending or {}), a: status}
        floor = track.floor or 0
        missing = set(track.started) | set(track.pending or ())
        if listed:
            top = max(listed)
            missing |= set(range(max(floor, top - MAX_GAP), top))
        missing = {a for a in missing if a not in listed and a not in track.accounted and a >= floor}
        suspects = []
        for a in missing:
            status = (track.pending or {}).get(a)
            if status is not None:
                self._count(track, a, status)  # gone before it settled: what it said last
            elif a in track.suspects:
                self._count(track, a, None)
                self.counted_unseen += 1
            else:
                suspects.append(a)
        track.suspects = tuple(suspects)
        floor = track.floor or 0
        track.started = _attempts(a for a, c in listed.items()
                                  if c.state in ("running", "exited") and a >= floor and a not in track.accounted)

    def _count(self, track: _Track, attempt: int, status: model.ContainerStatus | None) -> None:
        accounted = track.accounted | {attempt}
        if track.floor is not None:
            # what lies below the floor is done with: a crash loop's thousands of attempts cost nothing
            while track.floor in accounted:
                accounted = accounted - {track.floor}
                track.floor += 1
        track.accounted = accounted or _NONE
        if track.pending and attempt in track.pending:
            track.pending = {a: st for a, st in track.pending.items() if a != attempt} or None
        if attempt in track.suspects:
            track.suspects = tuple(a for a in track.suspects if a != attempt)
        if attempt in track.started:
            track.started = _attempts(a for a in track.started if a != attempt)
        if status is None:
            key = (UNKNOWN, "unknown")
        else:
            key = (reason_label(status.reason), exit_code_label(status.exit_code))
        log.debug("termination counted", namespace=track.namespace, pod=track.pod,
                  container=track.container, attempt=attempt, reason=key[0], exit_code=key[1],
                  floor=track.floor, accounted=sorted(track.accounted))
        per = self.counts.setdefault(track.ident, {})
        per[key] = per.get(key, 0) + 1

    def snapshot(self) -> list[tuple[ContainerIdentity, str, str, int]]:
        with self._lock:
            return [(ident, reason, code, n) for ident, per in self.counts.items()
                    for (reason, code), n in per.items()]


class EventWatcher:
    """Feeds the tracker from GetContainerEvents where the runtime broadcasts
    (broadcasts_events), in a thread of its own; resubscribes after a break.

    Where it does not broadcast, it only asks the runtime's version now and then
    (an upgrade to containerd 2.x starts the subscription without a restart).
    """

    RECHECK_SECONDS = 60.0
    RETRY_SECONDS = 1.0

    def __init__(self, client, tracker: TerminationTracker):
        self.client = client
        self.tracker = tracker
        self.subscribed = False
        self.breaks = 0
        self.events = 0
        self._stop = threading.Event()
        self._stream = None
        self._thread = threading.Thread(target=self._run, name="container-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                version = self.client.version()
            except CriError:
                self._stop.wait(self.RETRY_SECONDS)
                continue
            if not broadcasts_events(version):
                self._stop.wait(self.RECHECK_SECONDS)
                continue
            received = self.events
            subscribed = self._follow(version)
            if self._stop.is_set():
                break
            if subscribed:
                self.breaks += 1
            # refused outright (no event ever came): no retry storm against it
            self._stop.wait(self.RETRY_SECONDS if self.events > received else self.RECHECK_SECONDS)

    def _follow(self, version: model.RuntimeVersion) -> bool:
        """Follow one subscription until it ends; True if it delivered anything
        (a stream the runtime refused at once is no break of a working one)."""
        received = self.events
        try:
            stream = self._stream = self.client.container_events()
            if self._stop.is_set():
                return False
            self.subscribed = True
            for ev in stream:
                if self.events == received:
                    # said once a stream delivers: CRI-O with enable_pod_events off ends each one
                    # at once, empty, and a line a minute would say nothing
                    log.info("following the runtime's container events", runtime=version.runtime_name,
                             runtime_version=version.runtime_version)
                self.events += 1
                self.tracker.event(ev)
        except CriError as err:
            if not self._stop.is_set():
                log.warning("container event stream broke; terminations come from the poll until it is back",
                            error=str(err))
        except Exception:  # a bug must not end the thread for good
            log.exception("container event stream failed")
        finally:
            self.subscribed = False
            stream, self._stream = self._stream, None
            if stream is not None:
                stream.cancel()
        return self.events > received
