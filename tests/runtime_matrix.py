"""The runtime matrix's parameters, for modules that pin their versions
(tests/conftest.py runs every other `runtime_version` test on all of them)."""
from __future__ import annotations

import pytest

from crilab import versions


def version_id(name: str) -> str:
    return f"containerd-{name}"


def newest_only():
    """Run on the newest selected containerd only: for tests whose subject (TLS,
    Prometheus, the chart) does not depend on the runtime's version, which the
    rest of the suite covers version by version."""
    return pytest.mark.parametrize("runtime_version", versions.selected()[-1:], indirect=True, ids=version_id,
                                   scope="session")
