"""benchmarks/heap_at_rest.py still runs and prints the heap it describes (a smoke
run on a small fake node; what the figures are is the benchmark's job)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a benchmark smoke run

REPO = Path(__file__).resolve().parents[1]


def test_heap_at_rest_prints_arenas_and_what_the_last_scrape_kept(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "heap_at_rest.py"), "--fake", "20",
                          "--scrapes", "2", "--gap", "0", "--trace", "--base", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    rest = re.search(r"^at rest: RSS ([\d.]+) MB; pymalloc (\d+) arenas \(high-water (\d+)\), live ([\d.]+) MB", text, re.M)
    assert rest, text
    assert 10 < float(rest.group(1)) < 500 and 0 < int(rest.group(2)) <= int(rest.group(3))
    assert re.search(r"^scrape 1: \d+ ms CPU, \d+ bytes; pymalloc \d+ arenas", text, re.M), text
    assert re.search(r"^the last scrape made and still holds: [\d.]+ MB in \d+ blocks", text, re.M), text
