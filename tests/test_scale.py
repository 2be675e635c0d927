"""Large CRI answers: beyond gRPC's 4 MiB default (works with the 16 MiB limit
the kubelet also uses), and what happens past the limit at 20,000 containers:
the list call fails with a message naming the limit and the flag, the other
collectors keep serving, and raising --grpc-max-recv-bytes fixes it."""
from __future__ import annotations

import pytest

from cri_exporter.cri import CriClient, CriError
from cri_exporter.cri import api_pb2 as api
from tests.exporter_proc import ExporterProcess, wait_for
from tests.fakecri import FakeCRI, fleet

CONTAINER_COLLECTORS = "runtime,containers,imagefs"

pytestmark = pytest.mark.slow  # tens of thousands of containers


@pytest.fixture(scope="module")
def big_fleet():
    return fleet(6000)


def _list_bytes(pods) -> int:
    return len(api.ListContainersResponse(containers=[c for p in pods for c in p.containers]).SerializeToString())


def test_list_answers_beyond_4_mib_work_with_the_16_mib_limit(tmp_path, big_fleet):
    assert _list_bytes(big_fleet) > 4 * 1024 * 1024  # the shape recorded from containerd: ~1 KiB a container
    with FakeCRI(tmp_path / "cri.sock", big_fleet) as fake:
        assert len(CriClient(fake.endpoint).list_containers()) == 6000
        with pytest.raises(CriError) as err:
            CriClient(fake.endpoint, max_recv_bytes=4 * 1024 * 1024).list_containers()
        assert "--grpc-max-recv-bytes" in str(err.value) and err.value.code == "RESOURCE_EXHAUSTED"

        with ExporterProcess(fake.endpoint, "--collectors", CONTAINER_COLLECTORS, "--host-root", str(tmp_path)) as exp:
            s = exp.scrape()
            assert s.get1("cri_scrape_collector_success", collector="containers") == 1
            assert s.get1("cri_containers", state="running") == 6000
            assert len(s.labelsets("cri_container_info")) == 6000


def test_20000_containers_fail_with_the_limit_named_and_the_flag_fixes_it(tmp_path):
    pods = fleet(20000)
    size = _list_bytes(pods)
    assert size > 16 * 1024 * 1024, size
    with FakeCRI(tmp_path / "cri.sock", pods) as fake:
        with ExporterProcess(fake.endpoint, "--collectors", CONTAINER_COLLECTORS, "--host-root", str(tmp_path)) as exp:
            s = exp.scrape()
            assert s.get1("cri_up") == 1  # Version still answers: the runtime is fine, the answer too big
            assert s.get1("cri_scrape_collector_success", collector="containers") == 0
            assert s.get1("cri_scrape_collector_success", collector="imagefs") == 1
            log = wait_for(lambda: "larger than the gRPC receive limit" in exp.log() and exp.log(), what="log")
            assert "--grpc-max-recv-bytes" in log and "16777216" in log
        assert len(CriClient(fake.endpoint, max_recv_bytes=64 << 20).list_containers()) == 20000
        # The flag reaches the client. (New containers' ContainerStatus calls get half of a
        # scrape's deadline; at 20,000 the rest come in later scrapes, cached after.)
        # On a loaded machine the 20,000-container list can take longer than the 2 s scrape: it goes on
        # (to --runtime-timeout) and the next scrape takes it (collectors/inventory_fetch.py).
        with ExporterProcess(fake.endpoint, "--collectors", CONTAINER_COLLECTORS, "--host-root", str(tmp_path),
                             "--grpc-max-recv-bytes", str(64 << 20), "--scrape-timeout", "2",
                             "--runtime-timeout", "30") as exp:
            wait_for(lambda: exp.scrape() is not None and fake.calls.get("ContainerStatus", 0) > 0, timeout=120,
                     interval=0.5, what="statuses asked: the list was read")
            assert "larger than the gRPC receive limit" not in exp.log()
