"""Container log files on disk, read off the scrape path (stat only, never
their contents), and the kubelet's rotation limits they are held to.

Where a log lives is what the runtime says: ContainerStatus's `log_path`, the
sandbox's `log_directory` joined with the container's own path (containerd
1.6, 1.7 and 2.1 answer the joined, absolute path: checked on the lab; CRI-O
untested). It is asked once per container id, since it never changes for an
instance, and never guessed from
/var/log/pods/<ns>_<pod>_<uid>/<container>/<attempt>.log.

Rotation is the kubelet's (pkg/kubelet/logs/container_log_manager.go, read
at upstream master, kubernetes commit 030880a5; the file names below are
the file's own since it came in 2018, the worker queue and
containerLogMonitorInterval since 1.30): every containerLogMonitorInterval (10 s) it
stats each running container's log and, at containerLogMaxSize or more,
renames it to `<log>.<YYYYmmdd-HHMMSS>`, gzips the rotated files before it to
`<log>.<timestamp>.gz` (written as `<log>.<timestamp>.tmp` first) and keeps at most
containerLogMaxFiles - 2 of them besides the newest rotated one and the live
log. A rotated file counts as the kubelet counts it (GetAllLogs): `<log>.*`
without `.tmp` files and without an uncompressed file whose `.gz` is there.
Bytes count every `<log>*` file, leftovers included: it is disk the log holds.
Logs of the container's earlier attempts (`0.log` beside `1.log`) are the
earlier instances' and are not counted here.

Confinement: the log's directory is resolved inside --host-root (HostFS), and
its files are lstat'ed: a log or rotated file that is a symlink is skipped,
never followed (a container cannot make its log point at the agent's secrets).
"""
from __future__ import annotations

import os
import stat
import time
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Callable

import structlog

from cri_exporter.cri import CriClient, model
from cri_exporter.fetch_once import FetchOnce, status_key
from cri_exporter.confined_read import DeniedByConfinement
from cri_exporter.hostfs import HostFS
from cri_exporter.inventory import ContainerIdentity, Inventory
from cri_exporter.periodic import PeriodicReader

log = structlog.get_logger(__name__)

# KubeletConfiguration v1beta1 defaults (pkg/kubelet/apis/config/v1beta1/
# defaults.go, read at upstream master, kubernetes commit 030891da):
# containerLogMaxSize "10Mi", containerLogMaxFiles 5.
DEFAULT_MAX_SIZE = "10Mi"
DEFAULT_MAX_FILES = 5
# The deprecated flags the kubelet still takes over its config file.
_SIZE_FLAG, _FILES_FLAG = "container-log-max-size", "container-log-max-files"

# A scrape waits at most this long for the very first round (5.8 s at 5,000
# containers on a loaded machine: a ContainerStatus each), so the exporter's
# first scrape is not held to its deadline; until then the collector reports
# failure, and serves the round from the next scrape on.
FIRST_ROUND_WAIT = 2.0
# The kubelet's config is read again this often (it changes with a kubelet restart, rarely).
LIMITS_INTERVAL = 300.0
_COMPRESSED, _TMP = ".gz", ".tmp"


@dataclass(frozen=True, slots=True)
class LogLimits:
    """containerLogMaxSize in bytes (None: rotation off, a negative size, or
    a value the kubelet would refuse) and containerLogMaxFiles, with where each
    came from."""

    max_size_bytes: int | None
    max_files: int | None
    source: str


def limits_from(flags: dict[str, str], config: dict, sources: dict[str, str]) -> LogLimits:
    """The limits the kubelet runs with: a flag wins over its config (and
    drop-ins; `sources`: the file that set each field last), then the
    v1beta1 defaults."""
    from cri_exporter.doctor.facts.quantity import parse_quantity

    def where(config_field: str) -> str:
        return f"{config_field} in {sources.get(config_field, 'the kubelet config')}"

    said = []
    if _SIZE_FLAG in flags:
        size_text, sources_size = flags[_SIZE_FLAG], f"--{_SIZE_FLAG}"
    elif config.get("containerLogMaxSize") not in (None, ""):
        size_text, sources_size = str(config["containerLogMaxSize"]), where("containerLogMaxSize")
    else:
        size_text, sources_size = DEFAULT_MAX_SIZE, "kubelet default"
    said.append(f"size: {sources_size}")
    size = parse_quantity(size_text)
    max_size = int(size) if size is not None and size >= 0 else None
    files_raw = flags.get(_FILES_FLAG, config.get("containerLogMaxFiles"))
    where_files = (f"--{_FILES_FLAG}" if _FILES_FLAG in flags
                   else where("containerLogMaxFiles") if files_raw is not None else "kubelet default")
    try:
        max_files: int | None = int(files_raw) if files_raw is not None else DEFAULT_MAX_FILES
    except (TypeError, ValueError):
        max_files = None
    if max_files is not None and max_files <= 1:
        max_files = None  # the kubelet refuses to start its log manager (must be > 1)
    said.append(f"files: {where_files}")
    return LogLimits(max_size, max_files, "; ".join(said))


def read_limits(hostfs: HostFS) -> LogLimits:
    """The node's kubelet limits, read through the doctor's facts (its
    command line, --config file and --config-dir drop-ins). No kubelet found:
    the defaults, since a kubelet started without settings runs with them."""
    from cri_exporter.doctor.facts import kubelet, procfs, systemd

    settings = kubelet.load(hostfs, systemd.read_unit(hostfs, "kubelet.service"),
                            procfs.find_processes(hostfs, ("kubelet",)))
    return limits_from(settings.flags, settings.config, settings.config_sources)


@dataclass(frozen=True, slots=True)
class LogFiles:
    """One container's log: the live file's size, its rotated files as the
    kubelet counts them, and the bytes of all its files."""

    current_bytes: int
    rotated_files: int
    total_bytes: int
    files: int  # every regular file counted in total_bytes


def rotated_in_use(names: list[str]) -> int:
    """The rotated files the kubelet counts (filterUnusedLogs): no `.tmp`, and
    no uncompressed file whose compressed twin exists."""
    present = set(names)
    return sum(1 for n in names if not n.endswith(_TMP)
               and (n.endswith(_COMPRESSED) or n + _COMPRESSED not in present))


def read_log_files(hostfs: HostFS, log_path: str) -> LogFiles | None:
    """Stat the log at `log_path` (a host path) and its rotated files. None
    when the log is not there, is no regular file (a symlink included), or
    its path is not absolute."""
    if not log_path.startswith("/"):
        return None
    directory, _, name = log_path.rpartition("/")
    if not name:
        return None
    try:
        local_dir = hostfs.path(directory or "/")
        st = os.lstat(os.path.join(local_dir, name))
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    prefix = name + "."
    rotated: list[str] = []
    total = st.st_size
    try:
        with os.scandir(local_dir) as entries:
            for entry in entries:
                if not entry.name.startswith(prefix):
                    continue
                try:
                    est = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # removed by the kubelet's rotation meanwhile
                if stat.S_ISREG(est.st_mode):
                    rotated.append(entry.name)
                    total += est.st_size
    except OSError:
        pass  # the live file was there; its directory cannot be listed: no rotated files seen
    return LogFiles(st.st_size, rotated_in_use(rotated), total, 1 + len(rotated))


class LogTable(Mapping[ContainerIdentity, LogFiles]):
    """A round's logs by identity, ordered by namespace, pod and container:
    the identities in a list and their three numbers in one C array, not a
    dict of 5,000 LogFiles and their ints (0.8 MB less at 5,000 containers,
    and 20,000 fewer small objects made each round among the scrapes'). The
    collector walks `rows()`; a lookup by identity (tests) indexes on first use."""

    __slots__ = ("idents", "numbers", "_index")

    def __init__(self, idents: list[ContainerIdentity], numbers: array):
        self.idents = idents
        self.numbers = numbers  # current bytes, rotated files, total bytes of each identity, in turn
        self._index: dict[ContainerIdentity, int] | None = None

    def rows(self) -> Iterator[tuple[ContainerIdentity, int, int, int]]:
        v = self.numbers
        for i, ident in enumerate(self.idents):
            yield ident, v[3 * i], v[3 * i + 1], v[3 * i + 2]

    def __getitem__(self, ident: ContainerIdentity) -> LogFiles:
        if self._index is None:
            self._index = {ident: i for i, ident in enumerate(self.idents)}
        i = self._index[ident]
        v = self.numbers
        return LogFiles(v[3 * i], v[3 * i + 1], v[3 * i + 2], -1)

    def __iter__(self) -> Iterator[ContainerIdentity]:
        return iter(self.idents)

    def __len__(self) -> int:
        return len(self.idents)


@dataclass(frozen=True, slots=True)
class LogSample:
    """One round over every container's log."""

    taken_at: float
    duration: float
    logs: LogTable  # by namespace, pod, container
    limits: LogLimits | None
    files: int  # files stat'ed (its cost)


def _ask_status(client: CriClient, container_id: str, timeout: float) -> model.ContainerStatus:
    return client.container_status(container_id, timeout=timeout)


class ContainerLogSampler(PeriodicReader[LogSample]):
    """Every `interval` seconds in a thread of its own: take the runtime's
    containers (the scrapes' latest inventory, else its own lists), take
    each one's log path from the ContainerStatus cache the scrapes keep (asking
    the runtime only for a container no scrape asked about yet, into that same
    cache), stat each current container's log and its rotated files. The kubelet's limits
    are read at the first round and every LIMITS_INTERVAL after.

    The collector reads `latest`; the scrape never stats a log file."""

    thread_name = "container-logs"
    failure = "container log round failed"
    first_wait = FIRST_ROUND_WAIT

    def __init__(self, hostfs: HostFS, client: CriClient, interval: float, timeout: float = 5.0,
                 limits_reader: Callable[[HostFS], LogLimits] = read_limits,
                 inventories: Callable[[], Inventory | None] | None = None):
        super().__init__(interval)
        # The scrapes' latest inventory (InventoryFetch.latest), set by the
        # Exporter: a round stats the containers it holds, with its identities,
        # instead of listing the runtime again and building a second Inventory
        # (at 5,000 containers the lists and their copy cost some 9 MB of
        # resident memory beside the scrape's own). None, or no inventory
        # fetched in the last minute (nobody scraping): the round lists itself.
        self.inventories = inventories
        self.hostfs = hostfs
        self.client = client
        self.timeout = timeout
        self.limits_reader = limits_reader
        self.limits: LogLimits | None = None
        self.limits_error: str | None = None
        self._limits_at = float("-inf")
        # Container id and state -> ContainerStatus (its log_path never changes
        # for an id). The Exporter hands over the containers collector's, which
        # its scrapes fill and prune (`statuses_kept_by_scrape`): the runtime is
        # asked once per container, whoever asks first, and no second copy of
        # 5,000 paths is kept. Otherwise this one, pruned here each round.
        self.statuses: FetchOnce[model.KeptStatus] = FetchOnce(_ask_status)
        self.statuses_kept_by_scrape = False

    def _read_limits(self) -> None:
        now = time.monotonic()
        if now - self._limits_at < LIMITS_INTERVAL:
            return
        self._limits_at = now
        try:
            self.limits = self.limits_reader(self.hostfs)
            self.limits_error = None
        except DeniedByConfinement as err:  # replaced since serve started: the limits read before still hold
            log.info("kubelet log limits kept from the last read", reason=str(err))
        except Exception as err:  # noqa: BLE001 -- a config the parser chokes on: keep serving the sizes
            self.limits_error = f"{type(err).__name__}: {err}"
            log.warning("kubelet log limits unreadable", error=self.limits_error)

    def _log_path(self, c: model.Container) -> str | None:
        status = self.statuses.fetch(self.client, status_key(c.id, c.state), c.id, self.timeout)
        return status.log_path if status is not None else None  # None: removed meanwhile, or a busy runtime

    def take(self) -> LogSample:
        started, t0 = time.time(), time.monotonic()
        self._read_limits()
        inventory = self.inventories() if self.inventories is not None else None
        if inventory is None:
            pods = self.client.list_pod_sandboxes(timeout=self.timeout)
            inventory = Inventory(pods, self.client.list_containers(timeout=self.timeout))
        if not self.statuses_kept_by_scrape:
            listed = {status_key(c.id, c.state) for c in inventory.containers}
            self.statuses.retain(listed.__contains__)
            del listed
        # Each log's identity and numbers as found, no (identity, LogFiles) pair
        # and ints a container held through the round (some 0.6 MB at 5,000).
        idents: list[ContainerIdentity] = []
        numbers = array("q")
        files = 0
        for ident, c in inventory.current_containers.items():
            path = self._log_path(c)
            if not path:
                continue
            log_files = read_log_files(self.hostfs, path)
            if log_files is not None:
                idents.append(ident)
                numbers.extend((log_files.current_bytes, log_files.rotated_files, log_files.total_bytes))
                files += log_files.files
        del inventory
        # Ordered once here, not at every scrape that serves the round.
        order = sorted(range(len(idents)), key=[(x.namespace, x.pod, x.container) for x in idents].__getitem__)
        values = array("q")
        for i in order:
            values.extend(numbers[3 * i:3 * i + 3])
        logs = LogTable([idents[i] for i in order], values)
        del order, idents, numbers
        return LogSample(started, time.monotonic() - t0, logs, self.limits, files)
