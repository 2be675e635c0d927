"""CRI checks against a real containerd, on each version of the lab (crilab.versions).

Each case must produce its failing check and nothing else failing among the
CRI checks.
"""
import shutil

import pytest

import crilab
from crilab.versions import selected
from tests.test_doctor_support import copy_fixture, results

pytestmark = pytest.mark.containerd

CRI = ["cri.socket", "cri.api_version", "cri.runtime_ready", "cri.network_ready", "cri.deprecations", "cri.pod_stats"]


def cri_statuses(root, endpoint):
    r = results(root, endpoint, checks=CRI + ["containerd.sandbox_image", "containerd.config.drift"])
    return {k: v.status.value for k, v in r.items()}, r


def host_for(cd, tmp_path):
    """A fixture host whose config.toml is the one the lab containerd runs."""
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    shutil.copy(cd.base / "config.toml", root / "etc/containerd/config.toml")
    (root / "proc/812").rename(root / "proc/gone-812")  # compare against CRI Status only
    return root


def test_healthy_containerd_then_a_broken_sandbox(tmp_path, runtime_version):
    with crilab.Containerd(tmp_path / "cd", version=runtime_version) as cd:
        root = host_for(cd, tmp_path)
        st, r = cri_statuses(root, cd.endpoint)
        assert st == {"cri.socket": "pass", "cri.api_version": "pass", "cri.runtime_ready": "pass",
                      "cri.network_ready": "pass",
                      # 1.6 has no ContainerdHasNoDeprecationWarnings condition; 1.7.24 and 2.1.9 report it
                      # (true: the lab's config uses nothing deprecated, bin_dirs on 2.1)
                      "cri.deprecations": "skip" if runtime_version == "1.6" else "pass",
                      "cri.pod_stats": "pass", "containerd.sandbox_image": "pass",
                      "containerd.config.drift": "pass"}, r
        assert "the running config from CRI Status" in r["containerd.config.drift"].finding.seen

        # Edited on disk, never restarted: drift against Status verbose config.
        cfg = root / "etc/containerd/config.toml"
        cfg.write_text(cfg.read_text().replace("  restrict_oom_score_adj = true", "  restrict_oom_score_adj = false"))
        drift = results(root, cd.endpoint, checks=["containerd.config.drift"])["containerd.config.drift"].finding
        assert drift.status.value == "warn" and "restrict_oom_score_adj" in drift.seen

        # A sandbox without cgroup_parent breaks ListPodSandboxStats for all pods: 1.6.20 ("failed to
        # obtain metrics for sandbox"), 1.7.24 and 2.1.9 ("failed to decode sandbox container metrics").
        good = crilab.run_pod(cd, "good")
        bad = crilab.run_pod(cd, "bad", cgroup_parent="")
        st, r = cri_statuses(root, cd.endpoint)
        failing = {k for k, v in st.items() if v == "fail"}
        assert failing == {"cri.pod_stats"}, r
        seen = r["cri.pod_stats"].finding.seen
        assert bad.id[:13] in seen and "default/bad" in seen and good.id[:13] not in seen.split("broken")[-1]


def test_cri_plugin_disabled(tmp_path, runtime_version):
    # 1.6.20 with version = 2 exits on the short name "cri" ("invalid disabled
    # plugin URI"); Docker's containerd.io config uses it in a version 1 file.
    with crilab.Containerd(tmp_path / "cd", disabled_plugins=["io.containerd.grpc.v1.cri"],
                          version=runtime_version) as cd:
        st, r = cri_statuses(host_for(cd, tmp_path), cd.endpoint)
    assert st["cri.socket"] == "pass"
    assert st["cri.api_version"] == "fail"
    assert "unknown service runtime.v1" in r["cri.api_version"].finding.seen
    assert {k for k, v in st.items() if v == "fail"} == {"cri.api_version"}, r


def test_no_cni_config_means_network_not_ready(tmp_path, runtime_version):
    with crilab.Containerd(tmp_path / "cd", cni=False, version=runtime_version) as cd:
        st, r = cri_statuses(host_for(cd, tmp_path), cd.endpoint)
    assert {k for k, v in st.items() if v == "fail"} == {"cri.network_ready"}, r
    assert "NetworkPluginNotReady" in r["cri.network_ready"].finding.seen


def lab_host(cd, tmp_path):
    """A host tree holding what the lab containerd reads, at the same paths:
    its config.toml as /etc/containerd/config.toml, its CNI config directory,
    and the CNI binaries its config names (copied: a link to /usr would
    resolve inside the root). The kubelet is set to cgroupfs, as the lab's
    runc runs, and the tree has no cgroup mount (the lab's is the machine's)."""
    import os
    import re
    root = host_for(cd, tmp_path)
    shutil.rmtree(root / "sys/fs/cgroup")
    config = (cd.base / "config.toml").read_text()
    for conf_dir in re.findall(r'conf_dir = "([^"]+)"', config):
        shutil.copytree(conf_dir, root / conf_dir.lstrip("/"), dirs_exist_ok=True)
    bin_dirs = re.findall(r'bin_dir = "([^"]+)"', config) + [
        d for group in re.findall(r"bin_dirs = \[([^\]]*)\]", config) for d in re.findall(r'"([^"]+)"', group)]
    for bin_dir in bin_dirs:
        os.makedirs(root / bin_dir.lstrip("/"), exist_ok=True)
        for name in ("bridge", "host-local", "loopback", "portmap"):
            if os.path.exists(os.path.join(bin_dir, name)):
                shutil.copy2(os.path.join(bin_dir, name), root / bin_dir.lstrip("/") / name)
    kubelet = root / "var/lib/kubelet/config.yaml"
    kubelet.write_text(kubelet.read_text().replace("cgroupDriver: systemd", "cgroupDriver: cgroupfs"))
    return root


# The areas a host tree can mirror faithfully; kernel, kubelet and network
# facts would be the fixture's or this machine's, not the lab node's.
MIRRORED = ["containerd", "cri", "cni", "certs"]


def test_every_applicable_check_passes_on_the_healthy_lab_containerd(lab, tmp_path):
    cd, _ = lab
    root = lab_host(cd, tmp_path)
    r = results(root, cd.endpoint, checks=MIRRORED)
    bad = {k: (v.status.value, v.finding.summary, v.finding.seen) for k, v in r.items() if v.status.value in ("warn", "fail")}
    assert bad == {}
    passed = {k for k, v in r.items() if v.status.value == "pass"}
    assert {"containerd.config.parse", "containerd.config.version", "containerd.cgroup_driver",
            "containerd.sandbox_image", "containerd.config.drift", "cni.config", "cni.plugins",
            "cri.socket", "cri.runtime_ready", "cri.network_ready", "cri.pod_stats"} <= passed, r
    assert "runtime.v1 (containerd " in r["cri.api_version"].finding.summary


class _DeprecatedConfig(crilab.Containerd):
    """The lab's config with one setting its version reports as deprecated."""

    def _config(self) -> str:
        config = super()._config()
        if self.version.major >= 2:
            # 2.1 deprecates the CNI `bin_dir` string for the `bin_dirs` list (removed in 2.3).
            return config.replace("  bin_dirs = [", "  bin_dir = ").replace('"]\n  conf_dir', '"\n  conf_dir', 1)
        # 1.7 deprecates `registry.mirrors` for config_path's hosts.toml files.
        return config + ('\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\n'
                         '  endpoint = ["https://registry-1.docker.io"]\n')


# The deprecation conditions are measured, not assumed: 1.6.20 has no
# ContainerdHasNoDeprecationWarnings condition at all (the check skips there,
# test above); 1.7.24 and 2.1.9 turn it false and name each warning.
DEPRECATED = {"1.7": "cri-registry-mirrors", "2.1": "cri-cni-bin-dir"}


@pytest.mark.parametrize("runtime_version", [v for v in selected() if v in DEPRECATED],
                         indirect=True, ids=lambda v: f"containerd-{v}", scope="session")
def test_a_deprecated_setting_is_reported_as_the_runtime_names_it(tmp_path, runtime_version):
    with _DeprecatedConfig(tmp_path / "cd", version=runtime_version) as cd:
        assert crilab.run_pod(cd, "still-works").id  # deprecated, not broken
        root = host_for(cd, tmp_path)
        st, r = cri_statuses(root, cd.endpoint)
    finding = r["cri.deprecations"].finding
    assert st["cri.deprecations"] == "warn", r
    assert f"io.containerd.deprecation/{DEPRECATED[runtime_version]}" in finding.seen, finding
    assert {k for k, v in st.items() if v == "fail"} == set(), r
