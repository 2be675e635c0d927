"""A private, real containerd for tests and demos: 1.6.20 (Debian 12's), 1.7 or
2.x (crilab.versions), with the config a node of that version has.

Everything it owns (root, state, socket, runc state, CNI config and IPAM
data, logs) lives under one base dir, and its bridge/subnet are claimed with
a lock file, so several instances can run at once, even in other processes.
"""

import errno
import fcntl
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from cri_exporter.cri import api_pb2 as api
from cri_exporter.cri import api_pb2_grpc as api_grpc
from crilab import versions
from crilab.images import DEFAULT_CACHE, PAUSE_IMAGE, import_images

PACKAGES = ["containerd", "runc", "containernetworking-plugins", "busybox-static"]
CNI_BIN = "/usr/lib/cni"
DEADLINE = 10.0
LOCK_DIR = Path("/run/crilab")


def ensure_packages() -> None:
    """Install the Debian packages the lab needs, if any is missing."""
    if all(map(shutil.which, ["containerd", "ctr", "runc"])) and \
            os.path.exists(f"{CNI_BIN}/bridge") and os.path.exists("/bin/busybox"):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *PACKAGES]):
        try:
            subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as e:
            detail = getattr(e, "stderr", None) or e
            raise RuntimeError(f"crilab needs {' '.join(PACKAGES)}; `{' '.join(cmd)}` failed: "
                               f"{detail}") from e


def _procs() -> list[tuple[int, int, str]]:
    """(pid, ppid, command line) of every process. Read from /proc, not ps:
    ps cut command lines at 80 columns when run under pytest (no tty)."""
    procs = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            args = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        procs.append((int(d.name), int(stat.rsplit(")", 1)[1].split()[1]), args))
    return procs


class _Deadline:
    """A stub whose calls default to a deadline, so a wedged runtime fails a test
    instead of hanging it; with `end` (a monotonic time), never one past it."""

    def __init__(self, stub, timeout: float, end: float | None = None):
        self._stub, self._timeout, self._end = stub, timeout, end

    def __getattr__(self, name):
        timeout = self._timeout
        if self._end is not None:
            timeout = max(0.0, min(timeout, self._end - time.monotonic()))
        return functools.partial(getattr(self._stub, name), timeout=timeout)


def _claim_net(net: int | None):
    """Lock 10.88.<net>.0/24 for this instance (first free one if None)."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for n in [net] if net is not None else range(1, 255):
        f = open(LOCK_DIR / f"net-{n}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return n, f
        except BlockingIOError:
            f.close()
    raise RuntimeError(f"crilab network {net if net is not None else '1..254'} is in use")


def _remove_netns(path: str, tries: int = 50) -> None:
    """Unmount and unlink a pod's netns file, retrying while the kernel still
    holds it: unlink gives EBUSY until the lazy unmount has let go of the
    mount point, which on a loaded machine takes a moment. Never raises: a
    namespace that stays is reported by the doctor's leaked_netns check, not
    by a failed teardown."""
    for _ in range(tries):
        if not os.path.lexists(path):
            return
        subprocess.run(["umount", "-l", path], capture_output=True)
        try:
            os.unlink(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                print(f"crilab: cannot remove {path}: {e}", file=sys.stderr)
                return
        time.sleep(0.1)  # retry interval: the kernel is still releasing the netns
    print(f"crilab: {path} still busy after {tries} tries; left behind", file=sys.stderr)


class Containerd:
    """A containerd with the CRI plugin on a private socket.

    `net` picks the bridge `crilab<net>` and subnet 10.88.<net>.0/24.
    `version` is one of crilab.versions.NAMES ("1.6", the installed one, by
    default). `extra_toml` is appended to the config: it may only add tables
    the generated config does not already define (TOML forbids redefining one).
    """

    def __init__(self, base_dir, net: int | None = None, cni: bool = True,
                 disabled_plugins=(), extra_toml: str = "",
                 metrics_address: str | None = None, cache_dir=DEFAULT_CACHE,
                 version: str = "1.6"):
        self.version = versions.get(version)
        self.base = Path(base_dir).resolve()
        self.cni, self.disabled_plugins = cni, list(disabled_plugins)
        self.extra_toml, self.metrics_address = extra_toml, metrics_address
        self.cache_dir = cache_dir
        self.net, self._net_lock = _claim_net(net)
        self.bridge = f"crilab{self.net}"
        self.gateway = f"10.88.{self.net}.1"
        self.socket_path = str(self.base / "containerd.sock")
        if len(self.socket_path) > 107:  # sun_path is 108 bytes with the NUL
            raise ValueError(f"socket path too long for AF_UNIX: {self.socket_path}")
        self.endpoint = f"unix://{self.socket_path}"
        self.log_path = self.base / "containerd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: grpc.Channel | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self.running else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _config(self) -> str:
        return versions.render_config(
            self.version.name, root=f"{self.base}/root", state=f"{self.base}/state",
            address=self.socket_path, disabled_plugins=self.disabled_plugins,
            metrics_address=self.metrics_address, sandbox_image=PAUSE_IMAGE,
            cni_bin_dir=CNI_BIN, cni_conf_dir=f"{self.base}/cni",
            # Without restrict_oom_score_adj every RunPodSandbox fails ("can't get final
            # child's PID from pipe: EOF"; 1.6.20): runc may not set oom_score_adj -998 here.
            restrict_oom_score_adj=True,
            # runc keeps its state in /run/containerd/runc/<ns> whatever `state` says.
            # Two instances there do not clash (ids are random), but `runc list` mixes
            # them and wiping that dir would hit the other one. Root moves it to
            # Root/<ns>. Shim sockets stay in the shared /run/containerd/s, named by a
            # hash of address+ns+id.
            runc_root=f"{self.base}/runc") + self.extra_toml + "\n"

    def _cni_conflist(self) -> dict:
        return {
            "cniVersion": "0.4.0",
            "name": self.bridge,
            "plugins": [{
                "type": "bridge", "bridge": self.bridge,
                # Gateway on the bridge so pods can ping it; no masquerade: lab
                # traffic stays between the pods and the gateway.
                "isGateway": True, "ipMasq": False,
                "ipam": {"type": "host-local", "subnet": f"10.88.{self.net}.0/24",
                         # default /var/lib/cni/networks is shared by every instance
                         "dataDir": f"{self.base}/cni-ipam"},
            }],
        }

    def start(self, timeout: float = 30.0) -> "Containerd":
        """Start (or start again, on the same root) and import the lab images."""
        if self.running:
            return self
        if self._net_lock is None:
            raise RuntimeError("this Containerd was cleaned up; make a new one")
        ensure_packages()
        bin_dir = self.version.bin_dir()
        (self.base / "cni").mkdir(parents=True, exist_ok=True)
        if self.cni:
            (self.base / "cni" / "10-crilab.conflist").write_text(json.dumps(self._cni_conflist()))
        config = self.base / "config.toml"
        config.write_text(self._config())
        with open(self.log_path, "ab") as log:
            # Its own bin dir first in PATH: containerd runs the shim (and we run ctr)
            # of its own version, not the installed 1.6 ones.
            self._proc = subprocess.Popen([str(bin_dir / "containerd"), "--config", str(config)],
                                          env=self._env(), stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        # gRPC's default 1 s reconnect backoff would otherwise double the start time:
        # the first Version call usually comes before the socket exists.
        self._channel = grpc.insecure_channel(self.endpoint, options=[
            ("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 200)])
        stub = api_grpc.RuntimeServiceStub(self._channel)
        end = time.monotonic() + timeout
        while True:
            try:
                stub.Version(api.VersionRequest(), timeout=1)
                break
            except grpc.RpcError as err:
                # With the CRI plugin disabled, containerd's gRPC server is up
                # but answers "unknown service runtime.v1.RuntimeService".
                if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                    break
                if not self.running or time.monotonic() > end:
                    self.kill()
                    raise RuntimeError(f"containerd did not come up; see {self.log_path}:\n"
                                       + self.log_path.read_text()[-2000:]) from err
                time.sleep(0.05)  # poll interval of the wait for the socket, bounded by `end`
        import_images(self.socket_path, self.cache_dir, ctr=str(bin_dir / "ctr"))
        return self

    def _env(self) -> dict:
        return dict(os.environ, PATH=f"{self.version.bin_dir()}:{os.environ.get('PATH', '/usr/bin:/bin')}")

    def _close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait; containers keep running in their shims."""
        if self._proc is not None and self.running:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()

    def kill(self) -> None:
        """SIGKILL, like a crash: state and shims stay behind."""
        if self._proc is not None and self.running:
            self._proc.kill()
            self._proc.wait()
        self._close()

    def restart(self) -> "Containerd":
        self.stop()
        return self.start()

    def runtime_stub(self, timeout: float = DEADLINE):
        return _Deadline(api_grpc.RuntimeServiceStub(self._channel), timeout)

    def image_stub(self, timeout: float = DEADLINE):
        return _Deadline(api_grpc.ImageServiceStub(self._channel), timeout)

    def cleanup(self, budget: float = 60.0) -> None:
        """Leave the machine as found: no pod, process, mount, netns, bridge or
        pod cgroup of this instance. Safe after kill() and to call twice.

        Bounded: the runtime gets `budget` seconds in all to remove the pods (a
        wedged one fails its calls at their deadlines), then the brute-force pass
        (SIGKILL, lazy unmounts) takes over; a demo's Ctrl-C must not hang."""
        if self._net_lock is None:
            return
        try:
            if not self.running:
                self.start()  # a killed containerd must come back to tear pods down
            leftovers = self._remove_all_pods(time.monotonic() + budget)
        except (RuntimeError, grpc.RpcError, subprocess.SubprocessError):
            leftovers = []
        self.stop()
        self._kill_shims()
        for path in sorted(self._mounts(), reverse=True):
            subprocess.run(["umount", "-l", path], capture_output=True)
        for netns, cgroup_parent in leftovers:
            if netns:
                _remove_netns(netns)
            if cgroup_parent:  # runc leaves the pod level; the kubelet would remove it
                for ctl in Path("/sys/fs/cgroup").iterdir():
                    pod_cgroup = ctl / cgroup_parent.lstrip("/")
                    for d in [*pod_cgroup.glob("*/"), pod_cgroup]:
                        try:
                            d.rmdir()
                        except OSError:
                            pass
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        self._net_lock.close()  # releases the subnet claim
        self._net_lock = None

    def _remove_all_pods(self, end: float) -> list[tuple[str, str]]:
        """Stop and remove every sandbox, every call's deadline within `end` (a
        monotonic time); return their (netns path, cgroup parent)."""
        rt = _Deadline(api_grpc.RuntimeServiceStub(self._channel), DEADLINE, end)
        found = []
        for sb in rt.ListPodSandbox(api.ListPodSandboxRequest()).items:
            try:
                info = json.loads(rt.PodSandboxStatus(api.PodSandboxStatusRequest(
                    pod_sandbox_id=sb.id, verbose=True)).info["info"])
            except grpc.RpcError:
                continue  # past the budget: what was found so far still gets cleaned
            # 1.6.20 has no netNamespacePath in this info: read the runtime spec.
            netns = [ns.get("path", "") for ns in info["runtimeSpec"]["linux"]["namespaces"]
                     if ns["type"] == "network"]
            found.append((netns[0] if netns else "",
                          info["config"].get("linux", {}).get("cgroup_parent", "")))
            try:
                rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sb.id))
                rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sb.id))
            except grpc.RpcError:
                pass  # the brute-force pass in cleanup() deals with what is left
        return found

    def shim_pids(self) -> list[int]:
        """Live shims serving this instance's socket (zombies, cmdline-less, excluded)."""
        return [pid for pid, _, args in _procs()
                if "containerd-shim" in args and self.socket_path in args]

    def _kill_shims(self) -> None:
        """SIGKILL any shim still serving this socket, and its containers."""
        procs = _procs()
        doomed = set(self.shim_pids())
        while more := {pid for pid, ppid, _ in procs if ppid in doomed} - doomed:
            doomed |= more
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _mounts(self) -> list[str]:
        prefix = f"{self.base}/"
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        return [p for p in points if p.startswith(prefix)]

    def __enter__(self) -> "Containerd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
