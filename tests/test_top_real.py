"""`cri-exporter top` against the lab's real containerd, compared with the cgroup
files (this machine: cgroup v1 hybrid, cgroupfs driver, PSI in the unified tree).

Rates are checked without timing assumptions: a thread reads the cgroup's own
counters every few milliseconds, each read stamped with the wall clock before
and after it. A counter is monotonic, so its value at an instant t lies
between the last read that ended before t and the first that began after it.
`top --output json` gives each row the instant it was read (`time`, within
SLACK), its window and the counter's value, so the counter at both ends of
the window, and every rate made of it, has bounds from the cgroup itself,
however much CPU the busy pod gets on a loaded machine.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from crilab import restart_container, run_pod
from crilab.scenario import start_oom_pod
from tests import cgroup_truth
from tests.exporter_proc import wait_for
from tests.tmux import REPO, Tmux, top_command

pytestmark = pytest.mark.containerd

NS = "toptest"
MEM_LIMIT = 256 << 20
HOG_BYTES = 96 << 20
# How far a row's `time` (the middle of reading that cgroup) may be from the read of one of its files.
SLACK = 0.25
COLUMNS = ["CPU", "%LIM", "THR%", "MEM", "%LIM", "OOM", "RST", "PCPU", "PMEM", "PIO"]
ESC = "\x1b"


class Truth:
    """A cgroup's files read over and over in a thread: (started, ended, values) each time."""

    def __init__(self, read):
        self.read = read
        self.samples: list[tuple[float, float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Truth:
        self._thread.start()
        wait_for(lambda: len(self.samples) >= 2, what="the first cgroup reads")
        return self

    def __exit__(self, *exc) -> None:
        # a read that started after the last instant asked about (now, plus the slack bounds() allows)
        after = time.time() + SLACK + 0.2
        wait_for(lambda: self.samples[-1][0] > after, timeout=60, what="a cgroup read after the last instant asked about")
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.time()
            values = self.read()
            self.samples.append((started, time.time(), values))
            self._stop.wait(0.01)  # sampling interval

    def bounds(self, key: str, t: float) -> tuple[float, float]:
        """What the counter `key` was at wall time t: (lowest, highest) it can have been."""
        lower = max((v[key] for _, ended, v in self.samples if ended <= t - SLACK), default=None)
        upper = min((v[key] for started, _, v in self.samples if started >= t + SLACK), default=None)
        assert lower is not None and upper is not None, f"no read of {key} around {t}: {self.samples[0][0]}..{self.samples[-1][1]}"
        return lower, upper

    def delta_bounds(self, key: str, t1: float, t2: float) -> tuple[float, float]:
        lo1, hi1 = self.bounds(key, t1)
        lo2, hi2 = self.bounds(key, t2)
        return max(0.0, lo2 - hi1), hi2 - lo1

    def range(self, key: str) -> tuple[float, float]:
        values = [v[key] for _, _, v in self.samples]
        return min(values), max(values)

    def rates(self, key: str, window: float, per: float = 1.0) -> tuple[float, float]:
        """The lowest and highest rate of `key` over any window of about `window` seconds read."""
        rates = []
        for i, (s1, e1, v1) in enumerate(self.samples):
            for s2, e2, v2 in self.samples[i + 1:]:
                if abs((s2 + e2) / 2 - (s1 + e1) / 2 - window) < 0.4:
                    rates.append((v2[key] - v1[key]) / per / ((s2 + e2) / 2 - (s1 + e1) / 2))
        assert rates, "no two reads a window apart"
        return min(rates), max(rates)


def _psi_some_us(path: Path) -> float:
    m = re.search(r"^some .*total=(\d+)", path.read_text(), re.MULTILINE)
    assert m, path
    return float(m.group(1))


def _cpu_truth(uid: str, cid: str | None = None):
    def read() -> dict[str, float]:
        values = {"usage": cgroup_truth.cpu_usage_seconds(uid, cid),
                  "psi_cpu": _psi_some_us(cgroup_truth.cgroup_dir("unified", uid, cid) / "cpu.pressure")}
        if cid:
            stat = cgroup_truth.cpu_stat(uid, cid)
            values["periods"], values["throttled"] = stat["nr_periods"], stat["nr_throttled"]
        return values
    return read


def _memory_truth(uid: str, cid: str | None = None):
    return lambda: {"working_set": float(cgroup_truth.working_set_bytes(uid, cid))}


class Load:
    def __init__(self, containerd):
        self.burner = run_pod(containerd, "cpuburn", NS)
        self.burn = self.burner.add_container("burn", ["sh", "-c", "while :; do :; done"], cpu_quota=100000)
        self.hungry = run_pod(containerd, "memhog", NS)
        # dd fills a 96 MiB buffer, then blocks writing it to a pipe nobody reads: it holds it.
        self.hog = self.hungry.add_container("hog", ["sh", "-c", f"dd if=/dev/zero bs={HOG_BYTES} count=1 | sleep 2147483647"],
                                             memory_limit=MEM_LIMIT)
        wait_for(lambda: cgroup_truth.working_set_bytes(self.hungry.uid, self.hog) >= HOG_BYTES,
                 timeout=60, what="the memory hog to fill its buffer")

    def remove(self) -> None:
        for pod in (self.burner, self.hungry):
            pod.remove()


@pytest.fixture(scope="module")
def load(containerd):
    """A CPU-burning and a memory-hungry pod in namespace toptest."""
    pods = Load(containerd)
    try:
        yield pods
    finally:
        pods.remove()


@pytest.fixture
def tmux():
    t = Tmux()
    try:
        yield t
    finally:
        t.kill()


def top(containerd, *args: str, env: dict | None = None, wrap: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = [*(wrap or []), sys.executable, "-m", "cri_exporter", "top", "--runtime-endpoint", containerd.endpoint, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, **(env or {})})


def json_rows(result: subprocess.CompletedProcess) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def check_cpu_row(row: dict, truth: Truth, throttling: bool = True) -> None:
    """The row's CPU counter, rate, throttling and pressure against the cgroup's own reads."""
    t2, window = row["time"], row["window_seconds"]
    t1 = t2 - window
    lo, hi = truth.bounds("usage", t2)
    assert lo <= row["cpu_usage_seconds"] <= hi
    # the counter at the window's start: its end less the rate times the window
    lo, hi = truth.bounds("usage", t1)
    assert lo - 1e-3 <= row["cpu_usage_seconds"] - row["cpu_cores"] * window <= hi + 1e-3, (row, lo, hi)  # JSON rounds
    if throttling:
        plo, phi = truth.delta_bounds("periods", t1, t2)
        tlo, thi = truth.delta_bounds("throttled", t1, t2)
        assert phi > 0, "a busy container ran in no CFS period"
        low = tlo / phi
        high = thi / plo if plo else 1.0
        assert low - 1e-4 <= row["cpu_throttled_ratio"] <= high + 1e-4, (row, low, high)
    slo, shi = truth.delta_bounds("psi_cpu", t1, t2)
    assert slo / 1e6 / window - 1e-4 <= row["pressure_cpu_ratio"] <= shi / 1e6 / window + 1e-4, (row, slo, shi)


def test_once_json_rows_match_the_cgroup_files(containerd, load):
    with Truth(_cpu_truth(load.burner.uid, load.burn)) as cpu, Truth(_memory_truth(load.hungry.uid, load.hog)) as mem:
        rows = json_rows(top(containerd, "--once", "--output", "json", "--namespace", NS, "--interval", "4"))
    assert [(r["pod"], r["container"]) for r in rows] == [("cpuburn", "burn"), ("memhog", "hog")]  # by CPU
    burn, hog = rows
    assert burn["source"] == hog["source"] == "cgroup" and burn["note"] is None
    assert 3.5 <= burn["window_seconds"] <= 30
    check_cpu_row(burn, cpu)
    assert burn["cpu_limit_cores"] == 1.0  # cpu_quota 100000 / period 100000, as cpu.cfs_quota_us says
    assert burn["cpu_limit_ratio"] == pytest.approx(burn["cpu_cores"], abs=1e-3)
    assert burn["memory_limit_bytes"] is None and burn["memory_limit_ratio"] is None  # unlimited: no number
    lo, hi = mem.range("working_set")
    assert lo - (256 << 10) <= hog["memory_working_set_bytes"] <= hi + (256 << 10)
    limit = int((cgroup_truth.cgroup_dir("memory", load.hungry.uid, load.hog) / "memory.limit_in_bytes").read_text())
    assert hog["memory_limit_bytes"] == limit == MEM_LIMIT
    assert hog["memory_limit_ratio"] == pytest.approx(hog["memory_working_set_bytes"] / MEM_LIMIT, abs=1e-4)
    assert hog["cpu_limit_cores"] is None and hog["cpu_throttled_ratio"] is None  # no quota: never throttled
    for row in rows:
        assert (row["oom_kills"], row["oom_kills_at_least"], row["restarts"]) == (0, False, 0)
        assert row["state"] == "running" and row["kind"] == "container"

    by_memory = json_rows(top(containerd, "--once", "-o", "json", "--namespace", "toptes?", "--sort", "memory", "--interval", "0.5"))
    assert [r["pod"] for r in by_memory] == ["memhog", "cpuburn"]
    only = json_rows(top(containerd, "--once", "-o", "json", "--pod", "cpu*", "--pod", "nothing", "--interval", "0.5"))
    assert [(r["namespace"], r["pod"]) for r in only] == [(NS, "cpuburn")]


def test_pods_view_reads_the_pod_cgroups(containerd, load):
    with Truth(_cpu_truth(load.burner.uid)) as cpu:
        rows = json_rows(top(containerd, "--once", "--pods", "-o", "json", "--namespace", NS, "--interval", "2"))
    assert [(r["kind"], r["pod"]) for r in rows] == [("pod", "cpuburn"), ("pod", "memhog")]
    burn, hog = rows
    assert "container" not in burn
    check_cpu_row(burn, cpu, throttling=False)
    # The pod cgroup holds the pause process too: the pod's working set is its own file's.
    assert hog["memory_working_set_bytes"] >= HOG_BYTES
    assert hog["memory_limit_bytes"] == MEM_LIMIT  # no limit on the pod cgroup: the sum of its containers'
    assert burn["cpu_limit_cores"] == 1.0
    assert burn["cpu_throttled_ratio"] is not None  # its container's, the worst of the pod


def _screen_rows(screen: str) -> list[str]:
    lines = screen.split("\n")
    header = next(i for i, line in enumerate(lines) if "NAMESPA" in line)
    return [line for line in lines[header + 1:] if line.strip() and not line.startswith(("x not", "! ", "* ", "? "))]


def _cell(line: str, header: str, column: int) -> str:
    """The nth numeric column's cell (0 = CPU): they are right-aligned under their headers."""
    end = [m.end() for m in re.finditer(r"\S+", header)][-len(COLUMNS):][column]
    return line[:end].split()[-1]


def _bytes(text: str) -> float:
    units = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return float(text[:-1]) * units[text[-1]]


def _wait_rows(tmux: Tmux, first_pod: str) -> tuple[str, list[str]]:
    def ready(screen: str):
        rows = _screen_rows(screen) if "NAMESPA" in screen else []
        return (screen, rows) if rows and first_pod in rows[0] and re.search(r"\d\.\d\d", rows[0]) else None
    return tmux.wait_for(ready, what=f"{first_pod} on top with its rates")


def _header(screen: str) -> str:
    return next(line for line in screen.split("\n") if "NAMESPA" in line)


def _run_in_terminal(tmux: Tmux, args: list[str], tmp_path: Path, env: dict | None = None) -> None:
    """top in the pane, between two `stty -g` (the terminal's modes) and followed by its exit status."""
    tmux.run(f"stty -g > {tmp_path}/before; {top_command(*args)}; echo TOP-EXIT=$?; stty -g > {tmp_path}/after; "
             "sleep 600", env)


def _assert_restored(tmux: Tmux, tmp_path: Path) -> None:
    tmux.wait_for(lambda s: "TOP-EXIT=" in s, what="top to exit")
    screen = tmux.capture()
    assert "TOP-EXIT=0" in screen, screen
    assert "Traceback" not in screen
    wait_for(lambda: (tmp_path / "after").exists() and (tmp_path / "after").read_text(), what="stty -g")
    assert (tmp_path / "after").read_text() == (tmp_path / "before").read_text()  # echo, canonical mode back
    assert tmux.display("#{alternate_on} #{cursor_flag}") == "0 1"  # the user's screen back, cursor shown
    assert "NAMESPA" not in screen  # the table went with the alternate screen


def test_live_view_in_80_columns_sorts_and_matches_the_cgroups(containerd, load, tmux, tmp_path):
    with Truth(_cpu_truth(load.burner.uid, load.burn)) as cpu, Truth(_memory_truth(load.hungry.uid, load.hog)) as mem:
        _run_in_terminal(tmux, ["--runtime-endpoint", containerd.endpoint, "--namespace", NS, "--interval", "1"], tmp_path)
        screen, rows = _wait_rows(tmux, "cpuburn")
        header = _header(screen)
        tmux.send("m")
        mem_screen, mem_rows = _wait_rows(tmux, "memhog")
    assert tmux.display("#{alternate_on}") == "1"
    lines = screen.split("\n")
    assert len(lines) >= 24 and all(len(line) <= 80 for line in lines)
    # every column is there at 80 columns, the names shrunk to make room
    assert header.split()[1:] == ["POD", "CONTAINER", *COLUMNS] and header.split()[0].startswith("NAMESPA")
    assert [r.split()[1:3] for r in rows[:2]] == [["cpuburn", "burn"], ["memhog", "hog"]]
    # each row's cells end where their headers do: nothing wrapped or shifted
    ends = [m.end() for m in re.finditer(r"\S+", header)]
    for row in rows:
        assert [m.end() for m in re.finditer(r"\S+", row)][-len(COLUMNS):] == ends[-len(COLUMNS):], row
    shown = float(_cell(rows[0], header, 0))
    lo, hi = cpu.rates("usage", 1.0)  # over any window of about the interval while top ran
    assert lo - 0.01 <= shown <= hi + 0.01, (shown, lo, hi)
    assert abs(float(_cell(rows[0], header, 1)[:-1]) - shown * 100) <= 1  # of a 1-core limit
    mem_header = _header(mem_screen)
    lo, hi = mem.range("working_set")
    shown_mem = _bytes(_cell(mem_rows[0], mem_header, 3))
    assert lo - (1 << 20) <= shown_mem <= hi + (1 << 20), (shown_mem, lo, hi)  # "96M": rounded to a MiB
    assert abs(int(_cell(mem_rows[0], mem_header, 4)[:-1]) - lo / MEM_LIMIT * 100) <= 1
    tmux.send("q")
    _assert_restored(tmux, tmp_path)


@pytest.mark.parametrize("quit_key, env", [("q", {}), ("C-c", {}), ("q", {"TERM": "no-such-terminal"})],
                         ids=["q", "ctrl-c", "unknown-TERM"])
def test_quit_restores_the_terminal(containerd, load, tmux, tmp_path, quit_key, env):
    """q and Ctrl-C end it with status 0 and the terminal as it was; an unknown
    TERM (kubectl exec passes none of the user's) falls back to xterm."""
    _run_in_terminal(tmux, ["--runtime-endpoint", containerd.endpoint, "--namespace", NS, "--interval", "0.5"], tmp_path, env)
    _wait_rows(tmux, "cpuburn")
    assert tmux.display("#{alternate_on} #{cursor_flag}") == "1 0"
    tmux.send(quit_key)
    _assert_restored(tmux, tmp_path)


def test_quit_answers_at_once_while_the_runtime_hangs(containerd, load, tmux, tmp_path):
    """The readings run in their own thread: a runtime that does not answer
    (containerd stopped with SIGSTOP) leaves q working and the terminal restored."""
    _run_in_terminal(tmux, ["--runtime-endpoint", containerd.endpoint, "--namespace", NS, "--interval", "0.5",
                            "--timeout", "60"], tmp_path)
    _wait_rows(tmux, "cpuburn")
    os.kill(containerd.pid, 19)  # SIGSTOP
    try:
        # Kept: a reading started after the stop is then stuck in a CRI call with a 60 s deadline. Where the
        # machine is so slow that none has started yet, q is still answered: the test asks less, it does not fail.
        time.sleep(1.5)
        tmux.send("q")
        tmux.wait_for(lambda s: "TOP-EXIT=" in s, timeout=20, what="top to quit while its reading hangs")
    finally:
        os.kill(containerd.pid, 18)  # SIGCONT
    _assert_restored(tmux, tmp_path)


def test_colour_only_on_a_terminal(containerd, load, tmux, tmp_path):
    piped = top(containerd, "--once", "--namespace", NS, "--interval", "0.5")
    assert piped.returncode == 0 and ESC not in piped.stdout, piped.stdout
    assert piped.stdout.split("\n")[2].split()[1:] == ["POD", "CONTAINER", *COLUMNS]  # no width limit: no shrinking
    tmux.run(top_command("--runtime-endpoint", containerd.endpoint, "--once", "--namespace", NS, "--interval", "0.5")
             + "; echo TOP-EXIT=$?; sleep 600")
    tmux.wait_for(lambda s: "TOP-EXIT=0" in s, what="top --once")
    assert f"{ESC}[1m" in tmux.capture(escapes=True)  # bold header, from terminfo
    plain = Tmux()
    try:
        plain.run(top_command("--runtime-endpoint", containerd.endpoint, "--once", "--namespace", NS, "--interval", "0.5")
                  + "; echo TOP-EXIT=$?; sleep 600", env={"NO_COLOR": "1"})
        plain.wait_for(lambda s: "TOP-EXIT=0" in s, what="top --once with NO_COLOR")
        assert f"{ESC}[" not in plain.capture(escapes=True)
    finally:
        plain.kill()


HOSTILE_POD = "evil\x1b[2J\x1b[H\r\nname\u202e"  # clear the screen, home, CR LF, a right-to-left override
HOSTILE_CONTAINER = "c\x1b]2;pwned\x07\x1b[31m"  # set the window title, red from here on
SHOWN_POD = r"evil\x1b[2J\x1b[H\x0d\x0aname\u202e"
SHOWN_CONTAINER = r"c\x1b]2;pwned\x07\x1b[31m"


def test_hostile_names_cannot_drive_the_terminal(containerd, tmp_path):
    """containerd takes any bytes as names over CRI (no ';' or '=' in a pod name:
    the CNI plugin's arguments split on them) and returns them verbatim."""
    pod = run_pod(containerd, HOSTILE_POD, "toptest-hostile")
    try:
        pod.add_container(HOSTILE_CONTAINER, ["sleep", "2147483647"])
        rows = json_rows(top(containerd, "--once", "-o", "json", "--namespace", "toptest-hostile", "--interval", "0.5"))
        assert [(r["pod"], r["container"]) for r in rows] == [(HOSTILE_POD, HOSTILE_CONTAINER)]  # JSON keeps them exact
        piped = top(containerd, "--once", "--namespace", "toptest-hostile", "--interval", "0.5")
        assert ESC not in piped.stdout and "\r" not in piped.stdout and "\u202e" not in piped.stdout
        assert f"{SHOWN_POD} {SHOWN_CONTAINER}" in piped.stdout

        tmux = Tmux(width=160)
        try:
            _run_in_terminal(tmux, ["--runtime-endpoint", containerd.endpoint, "--namespace", "toptest-*",
                                    "--interval", "0.5"], tmp_path)
            tmux_title = tmux.display("#{pane_title}")
            screen = tmux.wait_for(lambda s: SHOWN_POD in s and s, what="the escaped names")
            title = tmux.display("#{pane_title}")
            assert title == tmux_title and "pwned" not in title
            header = _header(screen)
            line = next(line for line in screen.split("\n") if SHOWN_POD in line)
            assert SHOWN_CONTAINER[:12] in line  # on the same line (cut to 24 columns): no newline or CR took effect
            ends = [m.end() for m in re.finditer(r"\S+", header)]
            assert [m.end() for m in re.finditer(r"\S+", line)][-len(COLUMNS):] == ends[-len(COLUMNS):]
            assert screen.split("\n")[0].startswith("cri-exporter top")  # not cleared, not moved
            styled = next(line for line in tmux.capture(escapes=True).split("\n") if "evil" in line)
            assert f"{ESC}[31m" not in styled  # nothing turned red (its cells have no style of ours)
            tmux.send("q")
            _assert_restored(tmux, tmp_path)
        finally:
            tmux.kill()
    finally:
        pod.remove()


def test_oom_kills_and_restarts(containerd):
    """A child killed by the memory cgroup (counted by its cgroup), a container
    killed whole (only the runtime's OOMKilled is left), and a restart."""
    ns = "toptest-oom"
    kid = run_pod(containerd, "oomkid", ns)
    cid = kid.add_container("hog", ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 2147483647"],
                            memory_limit=32 << 20)
    killed = start_oom_pod(containerd, namespace=ns)  # pod "oom", its container "hog" exited OOMKilled
    flaky = run_pod(containerd, "flaky", ns)
    try:
        flaky.add_container("worker", ["sh", "-c", "exit 1"])
        restart_container(flaky, "worker", ["sleep", "2147483647"])
        oom_control = cgroup_truth.cgroup_dir("memory", kid.uid, cid) / "memory.oom_control"
        wait_for(lambda: "oom_kill 1" in oom_control.read_text(), what="the kernel to OOM-kill dd")

        rows = {r["pod"]: r for r in json_rows(top(containerd, "--once", "-o", "json", "--namespace", ns,
                                                   "--interval", "0.5"))}
        truth = int(re.search(r"oom_kill (\d+)", oom_control.read_text()).group(1))
        assert (rows["oomkid"]["oom_kills"], rows["oomkid"]["oom_kills_at_least"]) == (truth, False) == (1, False)
        # exited: its cgroup is gone, the runtime's reason is what proves one kill
        assert (rows["oom"]["oom_kills"], rows["oom"]["oom_kills_at_least"]) == (1, True)
        assert rows["oom"]["last_terminated_reason"] == "OOMKilled" and rows["oom"]["state"] == "exited"
        assert rows["oom"]["cpu_cores"] is None and rows["oom"]["memory_working_set_bytes"] is None
        assert rows["flaky"]["restarts"] == 1 and rows["flaky"]["last_terminated_reason"] == "Error"
        assert rows["flaky"]["oom_kills"] == 0

        text = top(containerd, "--once", "--namespace", ns, "--sort", "restarts", "--interval", "0.5")
        lines = text.stdout.split("\n")
        assert lines[3].split()[1:3] == ["flaky", "worker"]  # the restarted one first
        oom_line = next(line for line in lines if line.startswith("x ") and " oom " in line)
        assert " 1+ " in oom_line

        pods = {r["pod"]: r for r in json_rows(top(containerd, "--once", "--pods", "-o", "json", "--namespace", ns,
                                                   "--interval", "0.5"))}
        assert (pods["flaky"]["restarts"], pods["oomkid"]["restarts"]) == (1, 0)
        # v1: the pod cgroup does not count its containers' kills: the containers' sum
        assert (pods["oomkid"]["oom_kills"], pods["oom"]["oom_kills"]) == (1, 1)
    finally:
        for pod in (kid, killed, flaky):
            pod.remove()


NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
HIERARCHIES = ("cpu", "cpuacct", "memory", "pids", "blkio", "unified")


def test_unreadable_cgroups_are_marked_and_shown_with_cris_values(containerd, tmp_path):
    """As in test_cgroups_unreadable_real: top runs in a mount namespace of its own,
    without the capabilities that let root ignore file modes, with an empty
    mode-000 tmpfs over the pod's cgroup directories (EACCES, as after a chmod
    or an LSM denial); containerd and the rest of the machine see the real files."""
    pod = run_pod(containerd, "spin", "toptest-stale")
    try:
        cid = pod.add_container("burn", ["sh", "-c", "while :; do :; done"], cpu_quota=20000)
        dirs = [str(cgroup_truth.cgroup_dir(h, pod.uid)) for h in HIERARCHIES if cgroup_truth.cgroup_dir(h, pod.uid).is_dir()]
        mounts = "; ".join(f"mount -t tmpfs -o mode=000,size=4k stale {d}" for d in dirs)
        args = ["--runtime-endpoint", containerd.endpoint, "--namespace", "toptest-stale", "--interval", "1", "--once"]
        script = (f"{mounts}; {' '.join(NO_DAC)} {top_command(*args, '-o', 'json')} > {tmp_path}/rows; "
                  f"{' '.join(NO_DAC)} {top_command(*args, '--pods', '-o', 'json')} > {tmp_path}/pods; "
                  f"{' '.join(NO_DAC)} {top_command(*args)} > {tmp_path}/text")
        with Truth(_cpu_truth(pod.uid, cid)) as cpu:
            r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                               capture_output=True, text=True, timeout=120, cwd=REPO)
        assert r.returncode == 0, r.stderr
        (row,) = [json.loads(line) for line in (tmp_path / "rows").read_text().splitlines()]
        assert (row["source"], row["container"]) == ("cri", "burn")
        assert "permission denied" in row["note"].lower() and "from CRI" in row["note"]
        # CRI's cumulative CPU time (containerd reads the real files): the counter, a rate made of two readings
        lo, hi = cpu.bounds("usage", row["time"])
        assert lo - 0.5 <= row["cpu_usage_seconds"] <= hi + 0.5  # the runtime read it during the call
        assert row["cpu_cores"] is not None and row["memory_working_set_bytes"] is not None
        # what only the cgroup gives is unknown, never a zero
        for key in ("cpu_limit_cores", "cpu_throttled_ratio", "memory_limit_bytes", "oom_kills",
                    "pressure_cpu_ratio", "pressure_memory_ratio", "pressure_io_ratio"):
            assert row[key] is None, key
        (pod_row,) = [json.loads(line) for line in (tmp_path / "pods").read_text().splitlines()]
        assert pod_row["source"] == "cri" and pod_row["cpu_usage_seconds"] is not None
        text = (tmp_path / "text").read_text()
        line = next(line for line in text.split("\n") if " spin " in line)
        assert line.startswith("! ")
        cells = line.split()
        assert cells[-9:-7] == ["-", "-"] and cells[-6:] == ["-", "-", "0", "-", "-", "-"]  # CPU %LIM THR%; MEM %LIM...
        assert "! cgroup unreadable: CPU and memory from CRI" in text
    finally:
        pod.remove()
