#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the exporter. Where the machine has no
# CRI runtime answering, it first starts a private containerd with a few demo
# pods (crilab), and removes them again on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m crilab.demo "$@"
