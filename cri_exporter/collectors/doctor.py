"""The doctor's findings on /metrics: the latest periodic report (doctor/metrics.py).

The checks never run on a scrape: they read configs and ask the runtime, in
a child process, every --doctor-interval.
"""
from __future__ import annotations

from cri_exporter.collectors.base import ScrapeContext
from cri_exporter.doctor.metrics import DoctorCollector
from cri_exporter.exposition import AnyFamily


class DoctorScrape:
    name = "doctor"

    def __init__(self, doctor: DoctorCollector):
        self.doctor = doctor

    def collect(self, ctx: ScrapeContext) -> list[AnyFamily]:
        return list(self.doctor.collect())
