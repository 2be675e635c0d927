"""benchmarks/bench.py still runs and prints what the README quotes (a smoke
run: one small fake node, no timing asserted; speed is the benchmark's job)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a benchmark smoke run

REPO = Path(__file__).resolve().parents[1]


def test_the_benchmark_runs_and_prints_its_tables_and_targets():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench.py"), "--real", "", "--fake", "100",
                          "--scrapes", "3"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    row = re.search(r"^\| fake \| 100 \| ([\d.]+) ms \| .* \| (\d+) MB \((\d+)\) \| (\d+) \| ([\d.]+) \|", text, re.M)
    assert row, text
    assert float(row.group(1)) > 0 and 30 < int(row.group(2)) < 500 and int(row.group(4)) > 100 * 40
    assert "| 100 | " in text.split("| containers | samples |")[1]  # the exposition table, checked against generate_latest
    assert re.search(r"^- resident memory < 80 MB \(between scrapes; peak in the table\): fake 100: \d+ MB \[ok\]", text, re.M)
    # The series budget: the lean profile beside the default, on the same fake node.
    budget = {m.group(1): (int(m.group(2)), float(m.group(3)), float(m.group(4)))
              for m in re.finditer(r"^\| fake \| 100 \| 50 \| (default|lean) \| [\d.]+ ms \| [\d.]+ ms \| (\d+) \| "
                                   r"([\d.]+) \| ([\d.]+) \| \d+ \|", text, re.M)}
    assert set(budget) == {"default", "lean"}, text
    # container_fds (issue 15.5): its cost with and without, and its sampler's pass
    assert re.search(r"^- container_fds at 100 fake containers .* agent CPU a scrape [\d.]+ ms with it, [\d.]+ ms without "
                     r".* a pass of \d+ entries", text, re.M), text
    assert budget["lean"][0] < budget["default"][0] and budget["lean"][2] < budget["default"][2]
    # Issue 15's acceptance: the scrape with all of it against the one before it, in agent CPU
    assert re.search(r"^- the scrape with all of issue 15 at 100 fake containers \(\d+ series, \d+ before it\) .* "
                     r"[\d.]+ ms \([\d.]+x the floor's [\d.]+ ms\) against [\d.]+ ms .*: [\d.]+x \([+-][\d.]+%\) "
                     r"\[(ok|MISSED)\]", text, re.M), text
    # The ephemeral-storage walk's cost: a fake node of 100 containers' kubelet layout, walked.
    walk = re.search(r"^- ephemeral_storage at 100 fake containers \(50 pods, (\d+) directory entries.* ([\d.]+) ms CPU a minute",
                     text, re.M)
    assert walk and int(walk.group(1)) > 1000, text


def test_in_turn_prints_the_agents_and_the_parse_and_write_floors():
    """benchmarks/in_turn.py --parse-floor (issue 13's floors, benchmarks/parse_floor.py) still runs: one
    checkout scraped on a small fake node, the floor, the parse floor and the write floor printed."""
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "in_turn.py"), "--fake", "20", "--scrapes", "3",
                          "--parse-floor", str(REPO)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    agent = re.search(r"^fake 20: load [\d.]+; floor CPU ([\d.]+) ms; agent CPU a scrape: .*: ([\d.]+) ms \([\d.]+x\)$",
                      out.stdout, re.M)
    floors = re.search(r"^fake 20: in one child, floor ([\d.]+) / ([\d.]+) ms \(before / after\), parse floor ([\d.]+) ms "
                       r"\([\d.]+x their mean\), write floor ([\d.]+) ms \([\d.]+x\); agent / write floor: [\d.]+x$",
                       out.stdout, re.M)
    assert agent and floors, out.stdout + out.stderr[-3000:]
    assert float(agent.group(2)) > 0 and all(float(v) > 0 for v in floors.groups())
