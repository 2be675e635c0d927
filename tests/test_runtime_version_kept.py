"""The runtime collector asks CRI Version once per runtime instance
(collectors/runtime.py): a restart of the lab's containerd must make it ask
again, and Status, asked every scrape, keeps cri_up honest meanwhile."""
from __future__ import annotations

import pytest

from cri_exporter.collectors.runtime import _socket_identity
from crilab import run_pod
from tests.exporter_proc import ExporterProcess, wait_for

pytestmark = pytest.mark.containerd


def _calls(s, method: str) -> float:
    return s.get1("cri_request_duration_seconds_count", method=method)


def test_version_asked_again_after_a_restart_and_not_between(victim, runtime_version):
    run_pod(victim, "p", "ns").add_container("c", ["sleep", "2147483647"])
    with ExporterProcess(victim.endpoint, "--collectors", "runtime", "--scrape-timeout", "5") as exp:
        first = wait_for(lambda: (x := exp.scrape()).get1("cri_up") == 1 and x, what="first scrape")
        info = first.find("cri_runtime_info")
        assert len(info) == 1 and dict(next(iter(info))[1])["runtime_version"].lstrip("v").startswith(runtime_version + ".")
        versions, statuses = _calls(first, "Version"), _calls(first, "Status")
        for k in range(1, 4):
            s = exp.scrape()
            assert s.get1("cri_up") == 1
            assert s.find("cri_runtime_info") == info
            assert _calls(s, "Version") == versions, "Version asked again of the same instance"
            assert _calls(s, "Status") == statuses + k, "Status is asked every scrape"

        before = _socket_identity(victim.endpoint)
        victim.restart()  # no scrape while it is down: only the new socket says it restarted
        # A disk file system may hand the new socket the old one's inode (seen here on /tmp): the change time differs.
        assert _socket_identity(victim.endpoint) != before
        s = wait_for(lambda: (x := exp.scrape()).get1("cri_up") == 1 and x, what="a scrape after the restart")
        assert _calls(s, "Version") > versions, "the restarted runtime's Version was not asked"
        assert s.find("cri_runtime_info") == info
        versions = _calls(s, "Version")
        s = exp.scrape()
        assert s.get1("cri_up") == 1 and _calls(s, "Version") == versions  # kept again for the new instance

        victim.stop()
        s = exp.scrape()
        assert s.get1("cri_up") == 0, "a stopped runtime is down whatever Version said before"
        assert s.get1("cri_scrape_collector_success", collector="runtime") == 0
