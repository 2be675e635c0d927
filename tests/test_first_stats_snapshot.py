"""A freshly started agent whose first background stats refresh has not
finished (seconds on a large node: stats_refresher.py): its scrapes serve
everything else, count the stats collector as failed, and say why in the
log; once the refresh is done the snapshot's families are served.

The fake runtime holds ListPodSandboxStats open on demand, which a real
containerd cannot be made to do without hanging every other call too."""
from __future__ import annotations

from cri_exporter.exporter import Exporter
from cri_exporter.settings import Settings
from tests.exporter_proc import ExporterProcess, wait_for
from tests.fakecri import fake_node

COLLECTORS = "runtime,containers,stats,cgroups"
WHY = "the first background refresh"


def test_scrapes_before_the_first_refresh_say_it_has_not_finished(tmp_path):
    with fake_node(tmp_path, 6) as fake:
        fake.held.add("ListPodSandboxStats")  # the first refresh waits in its second call
        with ExporterProcess(fake.endpoint, "--host-root", str(tmp_path), "--collectors", COLLECTORS) as exp:
            wait_for(lambda: fake.calls.get("ListPodSandboxStats"), what="the first refresh's ListPodSandboxStats")
            s = exp.scrape()
            assert s.get1("cri_scrape_collector_success", collector="stats") == 0
            assert s.get1("cri_scrape_collector_success", collector="containers") == 1
            assert len(s.find("cri_container_info")) == 6
            assert not s.find("cri_stats_snapshot_timestamp_seconds")
            assert s.get1("cri_stats_refreshes_total") == 0
            wait_for(lambda: f"no stats snapshot yet: {WHY}, started" in exp.log(), what="the reason in the log")

            fake.held.clear()
            s = wait_for(lambda: (x := exp.scrape()).find("cri_stats_snapshot_timestamp_seconds") and x,
                         timeout=30, what="the first snapshot")
            assert s.get1("cri_scrape_collector_success", collector="stats") == 1
            assert s.get1("cri_stats_refreshes_total") == 1
            assert len(s.find("cri_container_writable_layer_bytes")) == 6
            warned = exp.log().count(WHY)
            exp.scrape()
            assert exp.log().count(WHY) == warned  # it does not repeat once the snapshot exists


def test_an_exporter_never_started_says_so(tmp_path):
    """The refresher runs only once the exporter is started (serve does it); a
    scrape of one not started names that, not a refresh in progress."""
    with fake_node(tmp_path, 2) as fake:
        exp = Exporter(Settings(runtime_endpoint=fake.endpoint, host_root=str(tmp_path),
                                collectors=tuple(COLLECTORS.split(","))))
        try:
            result = exp.scraper.scrape()
        finally:
            exp.stop()
    success = {s.labels["collector"]: s.value for f in result.metrics if f.name == "cri_scrape_collector_success"
               for s in f.samples}
    assert success["stats"] == 0 and success["containers"] == 1
    assert exp.refresher is not None
    assert exp.refresher.why_no_snapshot() == "no stats snapshot: the background refresh was never started"
