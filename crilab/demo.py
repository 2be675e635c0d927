"""The quick start's main job: the exporter over this machine's runtime.

Where no CRI runtime answers on the usual sockets, a private containerd with
the standard demo pods is started first (and cleaned up on Ctrl-C), so a
fresh machine shows real container metrics within seconds.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from cri_exporter.cri import CriClient, CriError, resolve_endpoint


def _answers(endpoint: str) -> bool:
    client = CriClient(endpoint, timeout=2)
    try:
        client.version()
        return True
    except CriError:
        return False
    finally:
        client.close()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _on_signals(handler):
    """Run `handler` on Ctrl-C or SIGTERM instead of raising KeyboardInterrupt,
    for a step that must not be cut short."""
    before = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in before.items():
            signal.signal(sig, old)


class Agent:
    """The exporter's process, started and stopped so that a Ctrl-C at any
    moment leaves none running."""

    def __init__(self, cmd: list[str]):
        self.cmd = cmd
        self.proc: subprocess.Popen | None = None

    def start(self, **popen) -> None:
        """A Ctrl-C or SIGTERM meanwhile is noted, not raised: a KeyboardInterrupt
        inside Popen, after the fork, would leave an agent running that nobody
        holds. It is raised once self.proc is set, so stop() finds the agent."""
        got: list[int] = []
        with _on_signals(lambda signum, frame: got.append(signum)):
            self.proc = subprocess.Popen(self.cmd, **popen)
        if got:
            raise KeyboardInterrupt

    def stop(self, grace: float) -> int | None:
        """SIGINT the agent and wait at most `grace` seconds, then SIGKILL it: a
        demo whose agent does not exit must still give the terminal back and
        tear its runtime down. Another Ctrl-C meanwhile kills it at once."""
        proc = self.proc
        if proc is None:
            return None
        with _on_signals(lambda signum, frame: proc.kill()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    return proc.wait(grace)
                except subprocess.TimeoutExpired:
                    print(f"demo: the agent (pid {proc.pid}) did not exit within {grace:g} s of SIGINT; "
                          "killing it", flush=True)
                    proc.kill()
            return proc.wait()


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # clean up on `kill` and timeouts, as on Ctrl-C
    # Ctrl-C stops the demo even when it was started with SIGINT ignored: a
    # non-interactive shell ignores it for a background job (`cmd &`), every
    # child inherits that, and Python then leaves it ignored, so the Ctrl-C a
    # test (or a wrapper) sends was lost and the demo never cleaned up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen-address", default="127.0.0.1:9920")
    parser.add_argument("--private", action="store_true", help="always start a private containerd")
    parser.add_argument("--agent-grace", type=float, default=30.0, metavar="SECONDS",
                        help="on Ctrl-C, how long the agent may take to exit before it is killed")
    args, extra = parser.parse_known_args()

    endpoint, _ = resolve_endpoint(os.environ.get("CONTAINER_RUNTIME_ENDPOINT"))
    base = lab = agent = None
    try:  # from here a Ctrl-C at any point leaves nothing behind: agent, pods, containerd, the temporary directory
        if args.private or not _answers(endpoint):
            from crilab import Containerd
            from crilab.scenario import start_standard_pods

            base = tempfile.mkdtemp(prefix="cri-exporter-demo-")
            print(f"demo: no CRI runtime answers at {endpoint}; starting a private containerd in {base}", flush=True)
            lab = Containerd(base)
            lab.start()
            start_standard_pods(lab)
            endpoint = lab.endpoint
            print(f"demo: containerd at {endpoint} with demo pods (shop/web, default/burner, batch, flaky)", flush=True)

        host, _, port = args.listen_address.rpartition(":")
        cmd = [sys.executable, "-m", "cri_exporter", "serve", "--runtime-endpoint", endpoint,
               "--listen-address", args.listen_address, "--log-format", "console", *extra]
        agent = Agent(cmd)
        agent.start()
        print(f"demo: open http://{host if host not in ('', '0.0.0.0') else 'localhost'}:{port}/metrics", flush=True)
        assert agent.proc is not None
        return agent.proc.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        # The agent goes first (bounded), then its runtime; a Ctrl-C while the
        # agent is stopped goes on to the cleanup rather than skipping it.
        if agent is not None:
            agent.stop(args.agent_grace)
        if lab is not None:
            print("demo: removing the demo pods and the private containerd", flush=True)
            lab.cleanup()
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
