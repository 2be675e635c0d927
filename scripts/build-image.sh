#!/usr/bin/env bash
# Builds the repository's Dockerfile with buildah, offline from any registry: the base is
# Debian 12's python3.11 made here with debootstrap (crilab/agent_image.py; the released
# image uses python:3.11-slim-bookworm). Cached in ~/.cache/crilab/image. Prints where the
# image's docker archive is, its id and its sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
exec .venv/bin/python -m crilab.agent_image --sizes "$@"
