"""`cri-exporter doctor`: diagnose a node's container runtime setup.

Checks live in doctor/checks/<area>.py, each with a stable id; the runner
runs them all and report.py renders the result. See docs/doctor.md.
"""
from cri_exporter.doctor.model import CheckResult, Finding, Report, Severity, Status
from cri_exporter.doctor.runner import UnknownCheck, run_doctor

__all__ = ["CheckResult", "Finding", "Report", "Severity", "Status", "UnknownCheck", "run_doctor"]
