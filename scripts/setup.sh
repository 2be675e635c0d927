#!/usr/bin/env bash
# Installs what cri-exporter and its tests need on a fresh Debian 12 machine:
# the Debian packages (a real containerd for the tests and the demo, promtool)
# and a virtualenv in .venv with the project installed in editable mode.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

# systemd: only for `systemd-analyze verify` of deploy/systemd in the tests (nothing is enabled).
# qemu-system-x86, debootstrap, kmod, cpio: the cgroup v2 + systemd guest (crilab/vm), built and booted
# under emulation by tests/test_cgroup_v2_node.py. tmux: the terminal `cri-exporter top` is tested in.
# xfsprogs: mkfs.xfs and xfs_quota carried into that guest for its project quota step (crilab/vm_quota.py).
APT_PACKAGES=(containerd runc containernetworking-plugins busybox-static prometheus iproute2 curl systemd xfsprogs
              qemu-system-x86 debootstrap kmod cpio tmux buildah)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's prometheus package starts a Prometheus (and node exporter) on
# :9090/:9100; the tests start their own and need neither.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus prometheus-node-exporter 2>/dev/null || true
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
log=$(mktemp)
if ! .venv/bin/python -m pip install -q -e ".[test]" >"$log" 2>&1; then
  cat "$log" >&2; echo "setup: pip install failed" >&2; exit 1
fi
rm -f "$log"
.venv/bin/python -c "import cri_exporter.cli" # fail here, not later, if the install did not take
