#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite, against a real
# private containerd that the suite starts itself. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
