"""The quick start's main job: the exporter over this machine's runtime.

Where no CRI runtime answers on the usual sockets, a private containerd with
the standard demo pods is started first (and cleaned up on Ctrl-C), so a
fresh machine shows real container metrics within seconds.
"""
from __future__ import annotations

import argparse
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


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # clean up on `kill` and timeouts, as on Ctrl-C
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen-address", default="127.0.0.1:9920")
    parser.add_argument("--private", action="store_true", help="always start a private containerd")
    args, extra = parser.parse_known_args()

    endpoint, _ = resolve_endpoint(os.environ.get("CONTAINER_RUNTIME_ENDPOINT"))
    base = lab = None
    try:  # from here a Ctrl-C at any point leaves nothing behind: pods, containerd, the temporary directory
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
        proc = subprocess.Popen(cmd)
        # Only once the agent is started: a Ctrl-C from here is forwarded to it (one during Popen
        # left it running, unsignalled, while the demo tore its runtime down: CI, twice).
        print(f"demo: open http://{host if host not in ('', '0.0.0.0') else 'localhost'}:{port}/metrics", flush=True)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            return proc.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        if lab is not None:
            print("demo: removing the demo pods and the private containerd", flush=True)
            lab.cleanup()
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)

if __name__ == "__main__":
    sys.exit(main())
