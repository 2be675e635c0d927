"""containerd.* checks: config files read the way containerd reads them
(version 1/2/3 section names, imports), against fixture host trees."""

import pytest

try:
    from tests.test_doctor_support import FakeCriServer, FakeRuntime, copy_fixture, fixture, results, status, write
except ImportError:
    from test_doctor_support import FakeCriServer, FakeRuntime, copy_fixture, fixture, results, status, write

HEALTHY = fixture("kubeadm-containerd-v2")
V3 = fixture("containerd-v3")
BROKEN = fixture("kubeadm-containerd-broken")


@pytest.mark.parametrize("check_id,healthy,v3,broken", [
    ("containerd.config.parse", "pass", "pass", "pass"),
    ("containerd.config.version", "pass", "pass", "pass"),
    ("containerd.cri.disabled", "pass", "pass", "fail"),
    ("containerd.cgroup_driver", "pass", "pass", "fail"),
    ("containerd.config.removed_keys", "pass", "pass", "fail"),
    ("containerd.sandbox_image", "pass", "pass", "warn"),
    ("containerd.registry.mirrors", "pass", "pass", "fail"),
    ("containerd.registry.hosts", "pass", "pass", "warn"),
    ("containerd.oom_score_adj", "pass", "pass", "fail"),
    ("containerd.service", "pass", "pass", "fail"),
])
def test_containerd_checks_on_fixture_nodes(check_id, healthy, v3, broken):
    assert status(HEALTHY, check_id) == healthy
    assert status(V3, check_id) == v3
    assert status(BROKEN, check_id) == broken


def test_parse_error_names_the_line():
    r = results(fixture("containerd-parse-error"), checks=["containerd"])
    parse = r["containerd.config.parse"]
    assert parse.status.value == "fail"
    assert "/etc/containerd/config.toml:8:" in parse.finding.seen
    # Checks that need the parsed file say so instead of guessing.
    assert r["containerd.cgroup_driver"].status.value == "skip"


def test_garbled_and_huge_config_are_findings_not_crashes(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    (root / "etc/containerd/config.toml").write_bytes(b"\x00\xff\xfe version = \x80\n[[[")
    assert status(root, "containerd.config.parse") == "fail"
    (root / "etc/containerd/config.toml").write_bytes(b"# x\n" * (1 << 19))
    r = results(root, checks=["containerd.config.parse"])["containerd.config.parse"]
    assert r.status.value == "fail" and "bytes" in r.finding.seen


def test_version_3_with_version_2_section_names_fails():
    r = results(fixture("containerd-v3-stale-sections"), checks=["containerd.config.version"])
    f = r["containerd.config.version"].finding
    assert f.status.value == "fail"
    assert "containerd" in f.summary and "sandbox_image" in f.summary
    assert "io.containerd.cri.v1.runtime" in f.fix
    # ...and the ignored SystemdCgroup means containerd runs cgroupfs against a systemd kubelet.
    assert status(fixture("containerd-v3-stale-sections"), "containerd.cgroup_driver") == "fail"


def test_missing_version_line_means_version_1():
    root = fixture("containerd-no-version")
    r = results(root, checks=["containerd.config.version", "containerd.cgroup_driver"])
    assert r["containerd.config.version"].status.value == "fail"
    assert "io.containerd.grpc.v1.cri" in r["containerd.config.version"].finding.summary
    assert r["containerd.cgroup_driver"].status.value == "fail"


def test_version_1_short_names_are_read(tmp_path):
    root = copy_fixture("containerd-no-version", tmp_path)
    write(root, "/etc/containerd/config.toml",
          "[plugins.cri.containerd.runtimes.runc.options]\n  SystemdCgroup = true\n")
    r = results(root, checks=["containerd.config.version", "containerd.cgroup_driver"])
    assert r["containerd.config.version"].status.value == "warn"
    assert r["containerd.cgroup_driver"].status.value == "pass"


def test_imports_merge_plugin_tables_on_2x_and_replace_them_on_1x(tmp_path):
    # Measured with `containerd config dump` (tests/test_doctor_layouts_real.py
    # holds it): 2.1.9 merges an import into the plugin's tables, 1.6.20 and
    # 1.7.24 replace the plugin's whole table with the import's.
    root = copy_fixture("containerd-v3", tmp_path)
    write(root, "/etc/containerd/conf.d/20-cni.toml",
          'version = 3\n[plugins."io.containerd.cri.v1.runtime".cni]\n  conf_dir = "/etc/cni/net.d"\n')
    assert status(root, "containerd.cgroup_driver") == "pass"  # version 3: 2.x, SystemdCgroup kept
    root = copy_fixture("kubeadm-containerd-v2", tmp_path / "v2")
    cfg = root / "etc/containerd/config.toml"
    cfg.write_text('imports = ["/etc/containerd/conf.d/*.toml"]\n' + cfg.read_text())
    write(root, "/etc/containerd/conf.d/20-cni.toml",
          'version = 2\n[plugins."io.containerd.grpc.v1.cri".cni]\n  conf_dir = "/etc/cni/net.d"\n')
    assert status(root, "containerd.cgroup_driver") == "fail"  # version 2, runtime unknown: 1.x, table replaced
    # The runtime does not answer, but its package says 2.x: 2.x merges the import.
    write(root, "/var/lib/dpkg/status", "Package: containerd\nStatus: install ok installed\nVersion: 2.1.9~ds1-5\n")
    f = results(root, checks=["containerd.cgroup_driver", "containerd.config.parse"])
    assert f["containerd.cgroup_driver"].status.value == "pass"
    assert "containerd version from its package: 2.1.9 (dpkg: containerd 2.1.9~ds1-5)" in f["containerd.config.parse"].finding.seen


def test_relative_imports_and_import_parse_errors(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    cfg = root / "etc/containerd/config.toml"
    cfg.write_text('imports = ["conf.d/*.toml"]\n' + cfg.read_text())
    write(root, "/etc/containerd/conf.d/50-bad.toml", "[plugins\n")
    r = results(root, checks=["containerd.config.parse"])["containerd.config.parse"]
    assert r.status.value == "fail" and "/etc/containerd/conf.d/50-bad.toml:1:" in r.finding.seen


def test_cgroupfs_on_cgroup_v2_warns(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    cfg = root / "etc/containerd/config.toml"
    cfg.write_text(cfg.read_text().replace("SystemdCgroup = true", "SystemdCgroup = false"))
    kcfg = root / "var/lib/kubelet/config.yaml"
    kcfg.write_text(kcfg.read_text().replace("cgroupDriver: systemd", "cgroupDriver: cgroupfs"))
    r = results(root, checks=["containerd.cgroup_driver"])["containerd.cgroup_driver"]
    assert r.status.value == "warn" and "cgroup v2" in r.finding.summary


def test_removed_keys_fail_on_containerd_2(tmp_path):
    root = copy_fixture("kubeadm-containerd-broken", tmp_path)
    with FakeCriServer(tmp_path / "cri.sock", FakeRuntime(version="v2.0.4")) as _:
        r = results(root, endpoint=f"unix://{tmp_path}/cri.sock", checks=["containerd.config.removed_keys"])
    f = r["containerd.config.removed_keys"].finding
    assert f.status.value == "fail" and "systemd_cgroup" in f.seen


def test_mirrors_without_config_path_warn(tmp_path):
    root = copy_fixture("kubeadm-containerd-broken", tmp_path)
    cfg = root / "etc/containerd/config.toml"
    cfg.write_text(cfg.read_text().replace('config_path = "/etc/containerd/certs.d"', ""))
    assert status(root, "containerd.registry.mirrors") == "warn"


def test_hosts_toml_problems_are_named():
    f = results(BROKEN, checks=["containerd.registry.hosts"])["containerd.registry.hosts"].finding
    assert "quay.io.bak~" in f.seen
    assert "ghcr.io/hosts.toml:2:" in f.seen
    # No scheme is fine: containerd prepends https:// (parseHostConfig).
    assert ("docker.io/hosts.toml: tries https://mirror.internal.example:5000 then https://registry-1.docker.io"
            in f.seen)


def test_hosts_toml_resolved_as_containerd_resolves_it(tmp_path):
    root = copy_fixture("containerd-v3", tmp_path)
    certs = root / "etc/containerd/certs.d"
    assert status(root, "containerd.registry.hosts") == "pass"  # its ca.crt exists
    (certs / "registry.internal.example:5000/ca.crt").unlink()
    f = results(root, checks=["containerd.registry.hosts"])["containerd.registry.hosts"].finding
    assert f.status.value == "warn" and "ca file /etc/containerd/certs.d/registry.internal.example:5000/ca.crt" in f.seen
    write(root, "/etc/containerd/certs.d/registry.internal.example:5000/ca.crt", "")
    write(root, "/etc/containerd/certs.d/registry.internal.example_5000_/hosts.toml",
          'server = "registry.internal.example:5000"\n[host."mirror.local"]\n  capabilities = ["pull", "fetch"]\n')
    f = results(root, checks=["containerd.registry.hosts"])["containerd.registry.hosts"].finding
    assert "registry.internal.example:5000: shadowed by registry.internal.example_5000_" in f.seen
    assert "unknown capability 'fetch'" in f.seen
    assert "registry.internal.example_5000_/hosts.toml: tries https://mirror.local then https://registry.internal.example:5000" in f.seen


def test_oom_score_adj_passes_when_restricted(tmp_path):
    root = copy_fixture("kubeadm-containerd-broken", tmp_path)
    cfg = root / "etc/containerd/config.toml"
    cfg.write_text(cfg.read_text().replace("systemd_cgroup = true", "restrict_oom_score_adj = true"))
    assert status(root, "containerd.oom_score_adj") == "pass"
    # In a user namespace (e.g. rootless, kind in userns) it must be set too.
    cfg.write_text(cfg.read_text().replace("restrict_oom_score_adj = true", ""))
    write(root, "/proc/640/status", "Name:\tcontainerd\nCapEff:\t000001ffffffffff\n")
    write(root, "/proc/640/uid_map", "         0     100000      65536\n")
    assert status(root, "containerd.oom_score_adj") == "fail"


def test_service_drop_in_fixes_unit(tmp_path):
    root = copy_fixture("kubeadm-containerd-broken", tmp_path)
    write(root, "/etc/systemd/system/containerd.service.d/10-k8s.conf",
          "[Service]\nKillMode=process\nDelegate=yes\nTasksMax=infinity\nLimitNOFILE=1048576\n")
    assert status(root, "containerd.service") == "pass"
    write(root, "/etc/systemd/system/containerd.service.d/20-x.conf", "[Service]\nTasksMax=4096\n")
    assert status(root, "containerd.service") == "warn"


def test_sandbox_image_against_image_store(tmp_path):
    sock = tmp_path / "cri.sock"
    fake = FakeRuntime(images=[("registry.k8s.io/pause:3.10", True)])
    with FakeCriServer(sock, fake):
        ep = f"unix://{sock}"
        r = results(HEALTHY, endpoint=ep, checks=["containerd.sandbox_image"])["containerd.sandbox_image"]
        assert r.status.value == "pass" and "pinned=yes" in r.finding.seen
        fake.images = [("registry.k8s.io/pause:3.9", False)]
        r = results(HEALTHY, endpoint=ep, checks=["containerd.sandbox_image"])["containerd.sandbox_image"]
        assert r.status.value == "warn" and "not in the image store" in r.finding.summary


def test_containerd_checks_skip_on_a_crio_node():
    r = results(fixture("crio"), checks=["containerd"])
    assert {x.status.value for x in r.values()} == {"skip"}


def test_short_plugin_name_in_version_2_stops_containerd(tmp_path):
    root = copy_fixture("kubeadm-containerd-broken", tmp_path)
    cfg = root / "etc/containerd/config.toml"
    cfg.write_text(cfg.read_text().replace('["io.containerd.grpc.v1.cri"]', '["cri"]'))
    f = results(root, checks=["containerd.cri.disabled"])["containerd.cri.disabled"].finding
    assert f.status.value == "fail" and "refuses to start" in f.summary


def test_docker_containerd_io_default_config_disables_cri(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    # /etc/containerd/config.toml as the containerd.io package ships it (no version line).
    write(root, "/etc/containerd/config.toml", '#   Copyright 2018-2022 Docker Inc.\n\ndisabled_plugins = ["cri"]\n')
    r = results(root, checks=["containerd.cri.disabled", "containerd.config.version"])
    assert r["containerd.cri.disabled"].status.value == "fail"
    assert "disabled" in r["containerd.cri.disabled"].finding.summary
    assert r["containerd.config.version"].status.value == "warn"


def test_removed_keys_only_warn_when_still_accepted(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    cfg = root / "etc/containerd/config.toml"
    cfg.write_text(cfg.read_text().replace('default_runtime_name = "runc"',
                                           'default_runtime_name = "runc"\n    untrusted_workload_runtime = {}'))
    f = results(root, checks=["containerd.config.removed_keys"])["containerd.config.removed_keys"].finding
    assert f.status.value == "warn" and "untrusted_workload_runtime" in f.seen


def test_sandbox_image_must_be_pinned_to_a_version(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    cfg = root / "etc/containerd/config.toml"
    text = cfg.read_text()
    assert 'sandbox_image = "' in text
    import re
    cfg.write_text(re.sub(r'sandbox_image = "[^"]*"', 'sandbox_image = "registry.k8s.io/pause:latest"', text))
    f = results(root, checks=["containerd.sandbox_image"])["containerd.sandbox_image"].finding
    assert f.status.value == "warn" and "not pinned to a version" in f.summary


def test_version_2_keys_left_in_version_3_tables_are_named(tmp_path):
    root = copy_fixture("containerd-v3", tmp_path)
    assert status(root, "containerd.config.ignored_keys") == "pass"
    write(root, "/etc/containerd/conf.d/20-stale.toml", 'version = 3\n[plugins."io.containerd.cri.v1.images"]\n'
          '  sandbox_image = "registry.internal/pause:3.10"\n[plugins."io.containerd.cri.v1.runtime"]\n'
          '  max_concurrent_downloads = 3\n  enable_seliunx = true\n')
    f = results(root, checks=["containerd.config.ignored_keys"])["containerd.config.ignored_keys"].finding
    assert f.status.value == "warn"
    assert '[plugins."io.containerd.cri.v1.images"] sandbox_image: belongs in [plugins."io.containerd.cri.v1.images".pinned_images] sandbox' in f.seen
    assert '[plugins."io.containerd.cri.v1.runtime"] max_concurrent_downloads: belongs in [plugins."io.containerd.cri.v1.images"] max_concurrent_downloads' in f.seen
    assert "enable_seliunx: belongs in nowhere" in f.seen


def test_config_path_is_a_list_of_directories(tmp_path):
    # containerd splits registry.config_path with filepath.SplitList (":") and
    # takes each registry's directory from the first root that has one.
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    cfg = root / "etc/containerd/config.toml"
    cfg.write_text(cfg.read_text().replace('config_path = "/etc/containerd/certs.d"',
                                           'config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"'))
    f = results(root, checks=["containerd.registry.hosts"])["containerd.registry.hosts"].finding
    assert f.status.value == "pass" and "/etc/docker/certs.d (absent)" in f.seen
    write(root, "/etc/docker/certs.d/ghcr.io/hosts.toml", 'server = "https://ghcr.io"\n[host."mirror.local"]\n  capabilities = ["pul"]\n')
    f = results(root, checks=["containerd.registry.hosts"])["containerd.registry.hosts"].finding
    assert f.status.value == "warn" and "/etc/docker/certs.d/ghcr.io/hosts.toml" in f.seen and "'pul'" in f.seen
