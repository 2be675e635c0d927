"""Run in a child: `cri-exporter doctor ARGV...` as an operator runs it (its
CLI confines this process), then, in the same confined process, try every
access in $CRI_PROBE_OPS (JSON: [[op, path], ...]; ops as in confine_probe.py)
and print "PROBE {exit, results}" as the last line. The parent asserts."""
from __future__ import annotations

import json
import os
import sys

from cri_exporter.doctor.cli import doctor
from tests.confine_probe import attempt


def main() -> None:
    ops = json.loads(os.environ.get("CRI_PROBE_OPS", "[]"))
    try:
        doctor.main(sys.argv[1:], prog_name="cri-exporter doctor", standalone_mode=False)
        status = 0
    except SystemExit as e:
        status = e.code
    sys.stdout.flush()
    print("PROBE " + json.dumps({"exit": status, "results": [attempt(op, path) for op, path in ops]}), flush=True)


if __name__ == "__main__":
    main()
