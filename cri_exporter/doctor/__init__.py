"""`cri-exporter doctor`: diagnose a node's container runtime setup.

Checks live in doctor/checks/<area>.py, each with a stable id; the runner
runs them all and report.py renders the result. See docs/doctor.md.
"""
from cri_exporter.doctor.model import CheckResult, Finding, Report, Severity, Status

__all__ = ["CheckResult", "Finding", "Report", "Severity", "Status", "UnknownCheck", "run_doctor"]


def __getattr__(name: str):
    # The runner pulls in every check and their libraries (pyroute2 alone is
    # 10 MB); `serve` runs the doctor in a child process and never needs them.
    if name in ("UnknownCheck", "run_doctor"):
        from cri_exporter.doctor import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
