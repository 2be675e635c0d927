"""Per-object CRI answers are asked once per object, whichever part of the
agent needs them (fetch_once.py): the container log round takes its log paths
from the ContainerStatus cache the scrapes keep, and the fd collector shares
the containers collector's PodSandboxStatus (hostNetwork) cache. Counted on
the fake runtime, which counts every call it answers: a real runtime cannot
say how often it was asked. The real-runtime tests of both collectors
(test_container_logs_real.py, test_container_fds_real.py) show the answers
are still right."""
from __future__ import annotations

import time

from tests.exporter_proc import ExporterProcess, wait_for
from tests.fakecri import FakeCRI, fleet, make_cgroup_tree, make_log_tree

COLLECTORS = "runtime,containers,cgroups,container_logs,container_fds"


def test_each_container_and_sandbox_status_is_asked_once(tmp_path):
    pods = fleet(40)  # 20 pods of two
    make_cgroup_tree(tmp_path, pods)
    make_log_tree(tmp_path, pods)
    with FakeCRI(tmp_path / "cri.sock", pods) as fake:
        with ExporterProcess(fake.endpoint, "--host-root", str(tmp_path), "--collectors", COLLECTORS,
                             "--container-log-interval", "1", "--fd-sample-interval", "1",
                             log_path=tmp_path / "exporter.log") as exp:
            first = exp.scrape()
            assert first.get1("cri_scrape_collector_success", collector="containers") == 1
            # Rounds of the log sampler after the scrapes asked every status:
            # each round's paths come from their cache, not from the runtime.
            after = time.time()

            def logs_after_a_later_round():
                got = exp.scrape()
                taken = got.find("cri_container_log_sample_timestamp_seconds")
                if not taken or min(taken.values()) <= after + 1:
                    return None
                return got if len(got.find("cri_container_log_file_bytes")) == 40 else None
            served = wait_for(logs_after_a_later_round, timeout=60, what="two log rounds after the first scrape")
            assert served.get1("cri_scrape_collector_success", collector="container_logs") == 1
            assert served.get1("cri_scrape_collector_success", collector="container_fds") == 1
            exp.scrape()
        # Without sharing: 80 ContainerStatus (the scrape's and the log round's
        # first pass each asked every container) and 40 PodSandboxStatus.
        assert fake.calls.get("ContainerStatus", 0) == 40, fake.calls
        assert fake.calls.get("PodSandboxStatus", 0) == 20, fake.calls
