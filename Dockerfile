# syntax=docker/dockerfile:1
# cri-exporter's image: the agent and nothing to build it with.
#
#   docker build -t ghcr.io/cri-exporter/cri-exporter:$(python -c 'import cri_exporter; print(cri_exporter.__version__)') .
#
# Both stages use the same base so the virtualenv's interpreter path
# (/usr/local/bin/python3.11) exists in the final one. Every dependency has a
# wheel for CPython 3.11 (the compiled ones manylinux: grpcio, protobuf, bcrypt,
# PyYAML, isal), so no compiler.
#
# The released image uses the official python:3.11-slim-bookworm. The tests
# (tests/test_image.py, no registry reachable) build this same file on a
# stand-in: Debian 12's own python3.11 made with debootstrap, passed as
# --build-arg PYTHON_IMAGE=localhost/crilab/python:3.11-bookworm
# (crilab/agent_image.py; docs/install.md "The image" says what that proves
# and what it does not).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/cri-exporter
WORKDIR /src
# Only what the package needs (see .dockerignore): the build context stays
# small and a test or doc edit does not rebuild the layer.
COPY pyproject.toml README.md ./
COPY cri_exporter ./cri_exporter
# Byte-compiled here: the root filesystem is read-only at run time.
RUN /opt/cri-exporter/bin/pip install . \
 && /opt/cri-exporter/bin/pip uninstall -y pip setuptools \
 && /opt/cri-exporter/bin/python -m compileall -q /opt/cri-exporter \
 && /opt/cri-exporter/bin/cri-exporter --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="cri-exporter" \
      org.opencontainers.image.description="Prometheus exporter and node doctor for Kubernetes nodes running a CRI runtime" \
      org.opencontainers.image.source="https://github.com/cri-exporter/cri-exporter" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/cri-exporter /opt/cri-exporter
ENV PATH=/opt/cri-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CRI_EXPORTER_LOG_FORMAT=json
# Non-root by default: `--help`, `version` and a doctor run over a copied tree
# need nothing more. On a node the runtime's socket decides: containerd and
# CRI-O create it root:root 0660, so the DaemonSet sets runAsUser: 0 (with
# every capability dropped; see deploy/helm/cri-exporter/templates/daemonset.yaml).
# Where the socket has its own group (containerd's [grpc] gid), run as 65534
# with that group as a supplemental group instead (docs/install.md).
USER 65534:65534
EXPOSE 9920
ENTRYPOINT ["cri-exporter"]
CMD ["serve", "--host-root=/host"]
