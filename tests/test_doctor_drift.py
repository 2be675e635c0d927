"""Drift against the running config: CRI-O's GET /config over its unix
socket (a fake HTTP server here) and containerd 2.x's Status verbose
info["config"] (a fake CRI server answering the 2.x JSON shape)."""
import http.server
import json
import os
import socketserver
import threading
import time

import pytest

try:
    from tests.test_doctor_support import FakeCriServer, FakeRuntime, copy_fixture, results, write
except ImportError:
    from test_doctor_support import FakeCriServer, FakeRuntime, copy_fixture, results, write

# The shape of `crio status config` / GET /config: CRI-O encodes its
# tomlConfig (pkg/config/config.go, cri-o commit f954a17e, ToBytes with
# BurntSushi/toml): [crio] holds RootConfig, then [crio.api],
# [crio.runtime] with [crio.runtime.runtimes.<name>], [crio.image]... Every
# key is present (defaults filled in); trimmed here to a representative set.
CRIO_RUNNING = """\
[crio]
  root = "/var/lib/containers/storage"
  runroot = "/run/containers/storage"
  imagestore = ""
  storage_driver = "overlay"
  log_dir = "/var/log/crio/pods"
  version_file = "/var/run/crio/version"
  internal_wipe = true

  [crio.api]
    grpc_max_send_msg_size = 83886080
    listen = "/var/run/crio/crio.sock"
    stream_address = "127.0.0.1"
    stream_port = "0"

  [crio.runtime]
    cgroup_manager = "{cgroup_manager}"
    conmon_cgroup = "system.slice"
    default_runtime = "crun"
    log_level = "info"
    pids_limit = -1
    [crio.runtime.runtimes]
{runtimes}
  [crio.image]
    default_transport = "docker://"
    pause_image = "{pause_image}"
    pause_command = "/pause"

  [crio.network]
    network_dir = "/etc/cni/net.d/"
    plugin_dirs = ["/opt/cni/bin/"]

  [crio.metrics]
    enable_metrics = false
    metrics_port = 9090
"""

RUNTIME = """\
      [crio.runtime.runtimes.{name}]
        runtime_config_path = ""
        runtime_path = "/usr/bin/{name}"
        runtime_type = "oci"
        runtime_root = "/run/{name}"
        monitor_path = "/usr/libexec/crio/conmon"
"""


def crio_running(cgroup_manager="systemd", pause_image="registry.k8s.io/pause:3.10", runtimes=("crun",)):
    return CRIO_RUNNING.format(cgroup_manager=cgroup_manager, pause_image=pause_image,
                               runtimes="".join(RUNTIME.format(name=n) for n in runtimes))


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class FakeCrioAPI:
    """CRI-O's HTTP API on a unix socket: GET /config answers `self.config`."""

    def __init__(self, socket_path):
        self.socket_path = str(socket_path)
        self.config = crio_running()
        self.requests = []

    def __enter__(self):
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                api.requests.append(self.path)
                if self.path != "/config":
                    self.send_error(404)
                    return
                body = api.config.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/toml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        os.makedirs(os.path.dirname(self.socket_path), exist_ok=True)
        self.server = _UnixHTTPServer(self.socket_path, Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def crio_host(tmp_path):
    """The crio fixture, its files older than the crio process (pid 700)."""
    root = copy_fixture("crio", tmp_path)
    now = time.time()
    for f in (root / "etc/crio").rglob("*.conf"):
        os.utime(f, (now - 3600, now - 3600))
    btime = int(now - 600) - 1000
    write(root, "/proc/stat", f"btime {btime}\n")
    ticks = 1000 * os.sysconf("SC_CLK_TCK")
    write(root, "/proc/700/stat", f"700 (crio) S 1 700 700 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 12 0 {ticks} 1000 100\n")
    return root


def crio_drift(root):
    return results(root, checks=["crio.config.drift"])["crio.config.drift"].finding


@pytest.fixture
def crio_api(tmp_path):
    root = crio_host(tmp_path)
    with FakeCrioAPI(root / "var/run/crio/crio.sock") as api:
        yield root, api


def test_crio_running_config_matches_files(crio_api):
    root, api = crio_api
    f = crio_drift(root)
    assert f.status.value == "pass", f
    assert "GET /config on /var/run/crio/crio.sock" in f.seen and "file times" in f.seen
    assert "/config" in api.requests


def test_crio_edited_but_not_restarted(crio_api):
    root, api = crio_api
    # The file now says cgroupfs and pause 3.10 with a runc handler; CRI-O
    # still runs what it read at start: systemd, pause 3.9, no runc, a kata
    # handler since removed from the files.
    write(root, "/etc/crio/crio.conf.d/20-cgroupfs.conf",
          '[crio.runtime]\ncgroup_manager = "cgroupfs"\nconmon_cgroup = "pod"\n'
          '[crio.runtime.runtimes.runc]\nruntime_path = "/usr/bin/runc"\n')
    os.utime(root / "etc/crio/crio.conf.d/20-cgroupfs.conf", (time.time() - 3600,) * 2)
    api.config = crio_running(pause_image="registry.k8s.io/pause:3.9", runtimes=("crun", "kata"))
    f = crio_drift(root)
    assert f.status.value == "warn", f
    assert "cgroup_manager: file says 'cgroupfs' (/etc/crio/crio.conf.d/20-cgroupfs.conf), " \
           "running CRI-O uses 'systemd'" in f.seen
    assert "conmon_cgroup: file says 'pod'" in f.seen
    assert "pause_image: file says 'registry.k8s.io/pause:3.10' (/etc/crio/crio.conf.d/10-pause.conf), " \
           "running CRI-O uses 'registry.k8s.io/pause:3.9'" in f.seen
    assert "[crio.runtime.runtimes.runc] is in the files, not in running CRI-O" in f.seen
    assert "running CRI-O has [crio.runtime.runtimes.kata], no file defines it" in f.seen
    assert "modified" not in f.seen  # the file times alone would have said nothing
    assert "systemctl restart crio" in f.fix and "crio config" in f.fix
    assert "did not work" in f.why


def test_crio_runtimes_from_several_dropins_merge(crio_api):
    root, api = crio_api
    for name in ("runc", "kata"):
        p = write(root, f"/etc/crio/crio.conf.d/30-{name}.conf",
                  f'[crio.runtime.runtimes.{name}]\nruntime_path = "/usr/bin/{name}"\n')
        os.utime(p, (time.time() - 3600,) * 2)
    api.config = crio_running(runtimes=("crun", "runc", "kata"))
    assert crio_drift(root).status.value == "pass"
    api.config = crio_running(runtimes=("crun", "runc")).replace('"/usr/bin/runc"', '"/usr/local/bin/runc"')
    seen = crio_drift(root).seen
    assert "[crio.runtime.runtimes.kata] is in the files" in seen
    assert "runtimes.runc.runtime_path: file says '/usr/bin/runc', running CRI-O uses '/usr/local/bin/runc'" in seen


def test_crio_api_unreachable_falls_back_to_file_times(tmp_path):
    root = crio_host(tmp_path)  # no socket at all
    f = crio_drift(root)
    assert f.status.value == "pass"
    assert "CRI-O API at /var/run/crio/crio.sock unreachable" in f.seen and "file times only" in f.seen
    os.utime(root / "etc/crio/crio.conf.d/10-pause.conf", None)
    f = crio_drift(root)
    assert f.status.value == "warn"
    assert "10-pause.conf modified" in f.seen and "unreachable" in f.seen


def test_crio_api_without_process(crio_api):
    root, api = crio_api
    (root / "proc/700").rename(root / "proc/gone-700")
    f = crio_drift(root)
    assert f.status.value == "pass" and "file times" not in f.seen
    api.config = crio_running(cgroup_manager="cgroupfs")
    assert "cgroup_manager: file says 'systemd' (/etc/crio/crio.conf)" in crio_drift(root).seen


def test_crio_skips_without_process_or_api(tmp_path):
    root = crio_host(tmp_path)
    (root / "proc/700").rename(root / "proc/gone-700")
    f = crio_drift(root)
    assert f.status.value == "skip" and "unreachable" in f.summary + f.seen


# ---- containerd 2.x ----

def containerd2_running(systemd_cgroup=True, conf_dir="/etc/cni/net.d", restrict_oom=False):
    """info["config"] as containerd 2.x builds it: json.Marshal of
    criconfig.Config (internal/cri/server/status.go, Status with verbose;
    struct tags in internal/cri/config/config.go and defaults in
    config_unix.go, containerd commit 301026e5, the same layout at v2.0.0).
    The embedded RuntimeConfig's fields sit at the top level; the images
    plugin's config (pinned_images.sandbox, registry) is NOT included.
    Trimmed to a representative set of keys."""
    return {
        "containerd": {
            "defaultRuntimeName": "runc",
            "runtimes": {"runc": {
                "runtimeType": "io.containerd.runc.v2", "runtimePath": "",
                "PodAnnotations": None, "ContainerAnnotations": None,
                "options": {"BinaryName": "", "CriuImagePath": "", "CriuWorkPath": "", "IoGid": 0, "IoUid": 0,
                            "NoNewKeyring": False, "Root": "", "ShimCgroup": "",
                            "SystemdCgroup": systemd_cgroup},
                "privileged_without_host_devices": False, "baseRuntimeSpec": "", "cniConfDir": "",
                "cniMaxConfNum": 0, "snapshotter": "", "sandboxer": "podsandbox", "io_type": ""}},
            "ignoreBlockIONotEnabledErrors": False, "ignoreRdtNotEnabledErrors": False},
        "cni": {"binDir": "", "binDirs": ["/opt/cni/bin"], "confDir": conf_dir, "maxConfNum": 1,
                "setupSerially": False, "confTemplate": "", "ipPref": "", "useInternalLoopback": False},
        "enableSelinux": False, "selinuxCategoryRange": 1024, "maxContainerLogLineSize": 16384,
        "disableApparmor": False, "restrictOOMScoreAdj": restrict_oom, "disableProcMount": False,
        "unsetSeccompProfile": "", "tolerateMissingHugetlbController": True, "disableHugetlbController": True,
        "device_ownership_from_security_context": False, "ignoreImageDefinedVolumes": False,
        "netnsMountsUnderStateDir": False, "enableUnprivilegedPorts": True, "enableUnprivilegedICMP": True,
        "enableCDI": True, "cdiSpecDirs": ["/etc/cdi", "/var/run/cdi"], "drainExecSyncIOTimeout": "0s",
        "ignoreDeprecationWarnings": None, "enableCRIU": True,
        "containerdRootDir": "/var/lib/containerd", "containerdEndpoint": "/run/containerd/containerd.sock",
        "rootDir": "/var/lib/containerd/io.containerd.grpc.v1.cri",
        "stateDir": "/run/containerd/io.containerd.grpc.v1.cri",
    }


def containerd_drift(root, ep):
    return results(root, ep, checks=["containerd.config.drift"])["containerd.config.drift"].finding


@pytest.fixture
def containerd2(tmp_path):
    root = copy_fixture("containerd-v3", tmp_path)
    (root / "proc/901").rename(root / "proc/gone-901")  # compare against CRI Status only
    sock = tmp_path / "cri.sock"
    fake = FakeRuntime(version="v2.1.4")
    fake.info["config"] = json.dumps(containerd2_running())
    with FakeCriServer(sock, fake):
        yield root, fake, f"unix://{sock}"


def test_containerd2_running_config_matches(containerd2):
    root, fake, ep = containerd2
    f = containerd_drift(root, ep)
    assert f.status.value == "pass", f
    assert "the running config from CRI Status" in f.seen
    assert "sandbox image and registry config_path were not compared" in f.seen


def test_containerd2_running_config_differs(containerd2):
    root, fake, ep = containerd2
    fake.info["config"] = json.dumps(containerd2_running(systemd_cgroup=False, conf_dir="/etc/cni/other"))
    f = containerd_drift(root, ep)
    assert f.status.value == "warn", f
    assert "runtimes.runc.options.SystemdCgroup: file says True, running containerd uses False" in f.seen
    assert "cni conf_dir: file says '/etc/cni/net.d', running containerd uses '/etc/cni/other'" in f.seen
    assert "sandbox" not in f.seen  # 2.x does not report it: never a false drift


def test_containerd20_cni_bin_dir_shape(containerd2):
    """2.0 reports cni.binDir only (binDirs arrived in 2.1)."""
    root, fake, ep = containerd2
    running = containerd2_running()
    running["cni"] = {"binDir": "/opt/cni/bin", "confDir": "/etc/cni/net.d", "maxConfNum": 1}
    fake.info["config"] = json.dumps(running)
    assert containerd_drift(root, ep).status.value == "pass"
    running["cni"]["binDir"] = "/usr/lib/cni"
    fake.info["config"] = json.dumps(running)
    assert "cni bin dirs: file says ['/opt/cni/bin'], running containerd uses ['/usr/lib/cni']" \
        in containerd_drift(root, ep).seen
