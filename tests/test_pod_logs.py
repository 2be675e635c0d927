"""Container log files and the kubelet's rotation limits (pod_logs.py) over
fixture host trees: the limits as the kubelet assembles them, the rotated
files as its log manager counts them, and confinement to --host-root.

The runtime's side (log paths from ContainerStatus, a real log written by a
real container) is tested on every lab version in test_container_logs_real.py.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from cri_exporter.hostfs import HostFS
from cri_exporter.pod_logs import LogLimits, read_limits, read_log_files, rotated_in_use

try:
    from tests.test_doctor_support import copy_fixture, write
except ImportError:
    from test_doctor_support import copy_fixture, write

MI = 1024 * 1024


def test_limits_default_without_a_kubelet(tmp_path):
    limits = read_limits(HostFS(str(tmp_path)))
    assert (limits.max_size_bytes, limits.max_files) == (10 * MI, 5)
    assert limits.source == "size: kubelet default; files: kubelet default"


def test_limits_from_config_then_dropin_then_flag(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    config = (root / "var/lib/kubelet/config.yaml").read_text()
    write(root, "/var/lib/kubelet/config.yaml", config + "containerLogMaxSize: 50Mi\ncontainerLogMaxFiles: 3\n")
    limits = read_limits(HostFS(str(root)))
    assert (limits.max_size_bytes, limits.max_files) == (50 * MI, 3)
    assert "containerLogMaxSize in /var/lib/kubelet/config.yaml" in limits.source

    # A --config-dir drop-in patches the config (KEP-3983)...
    write(root, "/var/lib/kubelet/kubeadm-flags.env",
          'KUBELET_KUBEADM_ARGS="--config-dir=/etc/kubernetes/kubelet.conf.d"\n')
    write(root, "/etc/kubernetes/kubelet.conf.d/20-logs.conf",
          "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncontainerLogMaxSize: 200Ki\n")
    limits = read_limits(HostFS(str(root)))
    assert (limits.max_size_bytes, limits.max_files) == (200 * 1024, 3)
    assert "20-logs.conf" in limits.source

    # ...and a flag wins over both.
    write(root, "/var/lib/kubelet/kubeadm-flags.env",
          'KUBELET_KUBEADM_ARGS="--config-dir=/etc/kubernetes/kubelet.conf.d --container-log-max-size=1Gi '
          '--container-log-max-files=7"\n')
    limits = read_limits(HostFS(str(root)))
    assert (limits.max_size_bytes, limits.max_files) == (1024 * MI, 7)
    assert limits.source == "size: --container-log-max-size; files: --container-log-max-files"


@pytest.mark.parametrize("size,files,expected", [
    ("-1", 5, LogLimits(None, 5, "")),      # rotation off: the kubelet runs a stub log manager
    ("ten", 5, LogLimits(None, 5, "")),     # the kubelet would not start
    ("10Mi", 1, LogLimits(10 * MI, None, "")),  # MaxFiles must be > 1
    ("10Mi", "x", LogLimits(10 * MI, None, "")),
])
def test_limits_the_kubelet_would_refuse_are_absent(tmp_path, size, files, expected):
    write(tmp_path, "/var/lib/kubelet/config.yaml",
          f"kind: KubeletConfiguration\ncontainerLogMaxSize: \"{size}\"\ncontainerLogMaxFiles: {files}\n")
    limits = read_limits(HostFS(str(tmp_path)))
    assert (limits.max_size_bytes, limits.max_files) == (expected.max_size_bytes, expected.max_files)


def test_rotated_files_counted_as_the_kubelet_counts_them():
    # filterUnusedLogs: .tmp is never in use; an uncompressed file whose .gz exists is not either.
    names = ["0.log.20261201-000000.gz", "0.log.20261202-000000", "0.log.20261202-000000.gz",
             "0.log.20261203-000000", "0.log.20261203-000000.tmp"]
    assert rotated_in_use(names) == 3


def _log_dir(root: Path) -> Path:
    d = root / "var/log/pods/ns_pod_uid/app"
    d.mkdir(parents=True)
    return d


def test_sizes_are_the_files_sizes(tmp_path):
    d = _log_dir(tmp_path)
    sizes = {"0.log": 1234, "0.log.20261201-000000.gz": 300, "0.log.20261202-000000": 5000,
             "0.log.20261201-000000.tmp": 40, "1.log": 999, "0.logx": 7}
    for name, size in sizes.items():
        (d / name).write_bytes(b"x" * size)
    files = read_log_files(HostFS(str(tmp_path)), "/var/log/pods/ns_pod_uid/app/0.log")
    assert files is not None
    assert files.current_bytes == 1234
    assert files.rotated_files == 2
    # 1.log (another attempt's) and 0.logx (not <log>.*) are not this log's.
    assert files.total_bytes == 1234 + 300 + 5000 + 40
    assert files.files == 4


def test_missing_log_or_relative_path_is_none(tmp_path):
    hostfs = HostFS(str(tmp_path))
    assert read_log_files(hostfs, "/var/log/pods/gone/app/0.log") is None
    assert read_log_files(hostfs, "app/0.log") is None
    assert read_log_files(hostfs, "/var/log/pods/") is None


def test_symlinks_are_not_followed_out_of_the_root(tmp_path):
    """A log, or a rotated file, that is a link (here to a file outside the
    root, by an absolute and by a relative target) is not measured; a `..`
    path stops at the root, as chroot would."""
    root = tmp_path / "host"
    outside = tmp_path / "secret"
    outside.write_bytes(b"s" * 4096)
    d = _log_dir(root)
    os.symlink(str(outside), d / "0.log")
    hostfs = HostFS(str(root))
    assert read_log_files(hostfs, "/var/log/pods/ns_pod_uid/app/0.log") is None
    os.unlink(d / "0.log")
    os.symlink(os.path.relpath(outside, d), d / "0.log")
    assert read_log_files(hostfs, "/var/log/pods/ns_pod_uid/app/0.log") is None
    os.unlink(d / "0.log")
    (d / "0.log").write_bytes(b"x" * 10)
    os.symlink(str(outside), d / "0.log.20261201-000000")
    files = read_log_files(hostfs, "/var/log/pods/ns_pod_uid/app/0.log")
    assert files is not None and (files.current_bytes, files.rotated_files, files.total_bytes) == (10, 0, 10)
    # `..` climbs no higher than the root: this names /secret inside it, which is not there.
    assert read_log_files(hostfs, "/var/log/../../../../secret") is None
    # A directory symlinked out of the root resolves inside it instead (HostFS.path).
    os.symlink(str(tmp_path), root / "var/log/pods/out")
    assert read_log_files(hostfs, "/var/log/pods/out/secret") is None


# ---- the sampler and collector over the fake runtime (what the real one cannot do: hang) ----

def test_a_hung_runtime_fails_the_collector_without_holding_the_scrape(tmp_path):
    import time as _time

    from cri_exporter.collectors.base import PartialCollection, ScrapeContext
    from cri_exporter.collectors.container_logs import ContainerLogsCollector
    from cri_exporter.cri import CriClient
    from cri_exporter.pod_logs import ContainerLogSampler
    from tests.exporter_proc import wait_for
    from tests.fakecri import FakeCRI, fleet, make_log_tree

    pods = fleet(4)
    make_log_tree(tmp_path, pods)
    with FakeCRI(tmp_path / "cri.sock", pods) as fake:
        fake.hang.set()
        client = CriClient(fake.endpoint, timeout=5)
        sampler = ContainerLogSampler(HostFS(str(tmp_path)), client, interval=0.2, timeout=1.0)
        collector = ContainerLogsCollector(sampler)
        sampler.start()
        try:
            ctx = ScrapeContext(client, HostFS(str(tmp_path)), _time.monotonic() + 30)
            with pytest.raises(PartialCollection, match="did not answer|no round over the container logs finished yet"):
                collector.collect(ctx)
            fake.hang.clear()

            def served():
                try:
                    return list(collector.collect(ScrapeContext(client, HostFS(str(tmp_path)), _time.monotonic() + 30)))
                except PartialCollection:
                    return None
            families = {f.name: f for f in wait_for(served, timeout=30, what="a round once the runtime answers")}
            assert len(families["cri_container_log_file_bytes"].values) == 4
        finally:
            sampler.stop()
            client.close()


def test_denied_families_start_no_sampler(tmp_path):
    from cri_exporter.exporter import Exporter
    from cri_exporter.settings import Settings

    sock = tmp_path / "none.sock"
    kept = Exporter(Settings(runtime_endpoint=f"unix://{sock}", host_root=str(tmp_path)))
    assert kept.parts.container_logs is not None
    denied = Exporter(Settings(runtime_endpoint=f"unix://{sock}", host_root=str(tmp_path),
                               metrics_deny="cri_container_log_.*"))
    assert denied.parts.container_logs is None
    assert "container_logs" not in {c.name for c in denied.scraper.collectors}


def test_a_round_uses_the_scrapes_inventory_instead_of_listing(tmp_path):
    """Handed the scrapes' latest inventory, a round lists nothing itself and
    keys its results by that inventory's own identities (no second copy);
    without one (nobody scraped for a minute) it lists the runtime itself."""
    from cri_exporter.collectors.inventory_fetch import InventoryFetch
    from cri_exporter.cri import CriClient
    from cri_exporter.pod_logs import ContainerLogSampler
    from tests.fakecri import FakeCRI, fleet, make_log_tree

    pods = fleet(6)
    make_log_tree(tmp_path, pods)
    with FakeCRI(tmp_path / "cri.sock", pods) as fake:
        client = CriClient(fake.endpoint, timeout=10)
        try:
            fetch = InventoryFetch(client)
            held = [fetch.get(10)]
            sampler = ContainerLogSampler(HostFS(str(tmp_path)), client, interval=3600.0, timeout=10.0,
                                          limits_reader=lambda h: LogLimits(None, None, "test"),
                                          inventories=lambda: held[0])
            lists = (fake.calls.get("ListContainers", 0), fake.calls.get("ListPodSandbox", 0))
            sampler.sample()
            assert sampler.last_error is None and sampler.latest is not None
            assert (fake.calls.get("ListContainers", 0), fake.calls.get("ListPodSandbox", 0)) == lists
            assert fake.calls.get("ContainerStatus", 0) == 6, "a log path asked once per container"
            inventory = held[0]
            assert len(sampler.latest.logs) == 6
            for ident in sampler.latest.logs:
                assert any(ident is own for own in inventory.current_containers), "the inventory's identity"
            held[0] = None
            sampler.sample()
            assert fake.calls.get("ListContainers", 0) == lists[0] + 1, "no inventory: it lists itself"
            assert len(sampler.latest.logs) == 6 and fake.calls.get("ContainerStatus", 0) == 6
        finally:
            client.close()
