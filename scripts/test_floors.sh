#!/usr/bin/env bash
# The fast tests on the OLDEST versions pyproject.toml allows (every `name>=X` of
# [project].dependencies installed as `name==X`), in .venv-floors. The main .venv
# (scripts/setup.sh) holds the newest allowed ones, and the whole suite runs there:
# together CI tests both ends of each range. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-floors
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
floors=$("$PY" - <<'PY'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
out = []
for dep in project["dependencies"]:
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([^,;\s]+).*", dep)
    if not m:
        raise SystemExit(f"test_floors: no >= floor in dependency {dep!r}")
    out.append(f"{m.group(1)}=={m.group(2)}")
# What the chosen tests import beyond the agent, at the versions the test extra names.
wanted = ("pytest", "hypothesis", "grpcio-tools", "trustme")
for dep in project["optional-dependencies"]["test"]:
    if re.split(r"[=<>!~ ]", dep, maxsplit=1)[0] in wanted:
        out.append(dep)
print("\n".join(out))
PY
)
log=$(mktemp)
# shellcheck disable=SC2086
if ! "$VENV/bin/python" -m pip install -q $floors >"$log" 2>&1 \
   || ! "$VENV/bin/python" -m pip install -q --no-deps -e . >>"$log" 2>&1; then
  cat "$log" >&2; echo "test_floors: pip install failed" >&2; exit 1
fi
rm -f "$log"
echo "test_floors: $(echo $floors | tr '\n' ' ')" >&2
# What the dependencies do for the agent: the exposition writer (prometheus-client) and its gzip (isal),
# the CRI client and fake runtime (grpcio, protobuf), cgroups, configs (PyYAML),
# the web config (bcrypt), logs (structlog), the CLI (click); and every module of the package imports
# with only the declared dependencies, at their floors (tests/test_dependencies.py).
exec "$VENV/bin/python" -m pytest -m "not containerd and not slow" -p no:cacheprovider tests/test_dependencies.py \
  tests/test_exposition.py tests/test_units.py tests/test_cgroups_collector.py tests/test_cgroups_unreadable.py \
  tests/test_webconfig.py tests/test_doctor_kubelet.py tests/test_doctor_metrics.py tests/test_http_parsing.py "$@"
