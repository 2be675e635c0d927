"""`serve` without a web config maps no OpenSSL; with one, or once something uses TLS, the real ssl is there.

The TLS side (a web config's TLS, reloads, client certificates) is tests/test_web_tls.py's: those
agents start with --web-config-file, so they load ssl as before."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cri_exporter.ssl_on_demand import serve_without_web_config
from tests.exporter_proc import REPO, wait_for


def openssl_mapped(pid: int | str) -> list[str]:
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({line.split()[-1] for line in maps if "libcrypto" in line or "libssl" in line or "_ssl." in line
                   or "_hashlib" in line})


@pytest.mark.parametrize("argv, environ, without", [
    (["cri-exporter", "serve"], {}, True),
    (["cri-exporter", "serve", "--host-root", "/host"], {}, True),
    (["cri-exporter", "serve", "--web-config-file", "w.yml"], {}, False),
    (["cri-exporter", "serve", "--web-config-file=w.yml"], {}, False),
    (["cri-exporter", "serve", "--web.config.file", "w.yml"], {}, False),
    (["cri-exporter", "serve"], {"CRI_EXPORTER_WEB_CONFIG_FILE": "w.yml"}, False),
    (["cri-exporter", "serve"], {"CRI_EXPORTER_WEB_CONFIG_FILE": ""}, True),  # click ignores an empty variable
    (["cri-exporter", "doctor"], {}, False),  # the doctor (serve's child too) is left as it was
    (["cri-exporter", "--help"], {}, False),
    (["/usr/local/bin/cri-exporter", "serve"], {}, True),
    (["/src/cri_exporter/__main__.py", "serve"], {}, True),  # python -m cri_exporter serve
    (["/venv/bin/pytest", "-k", "serve"], {}, False),  # a process importing the CLI is left as it was
])
def test_only_serve_without_a_web_config_goes_without(argv, environ, without):
    assert serve_without_web_config(argv, environ) is without


PROBE = textwrap.dedent("""
    import sys, os
    sys.argv = ["/usr/local/bin/cri-exporter", "serve"]
    import cri_exporter.cli, cri_exporter.server, cri_exporter.exporter, prometheus_client, http.client, hashlib, hmac
    from cri_exporter import ssl_on_demand
    import ssl
    def mapped():
        return sorted({l.split()[-1] for l in open("/proc/self/maps") if "libcrypto" in l or "libssl" in l})
    print("before", ssl_on_demand.loaded(), mapped())
    # what the agent hashes with, and what asyncio asks at create_server, without OpenSSL
    assert hashlib.blake2b(b"x", key=b"k").hexdigest() == BLAKE
    assert hmac.compare_digest(b"a", b"a") and not isinstance(object(), ssl.SSLSocket)
    print("still", ssl_on_demand.loaded())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # building a class loads the real module
    print("after", ssl_on_demand.loaded(), type(ctx).__module__, ctx.minimum_version >= ssl.TLSVersion.TLSv1_2,
          mapped() != [])
""")


def test_the_stand_in_becomes_the_real_ssl_when_something_uses_it():
    import hashlib

    blake = hashlib.blake2b(b"x", key=b"k").hexdigest()
    out = subprocess.run([sys.executable, "-c", PROBE.replace("BLAKE", repr(blake))], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["before False []", "still False", "after True ssl True True"], out.stdout


def test_serve_without_a_web_config_maps_no_openssl_and_its_doctor_child_runs(exporter):
    """The session's agent (no web config, the doctor on): no OpenSSL in its maps, /metrics
    answers, and the doctor child (a `doctor` command of its own, which loads ssl as before)
    reported its checks."""
    assert openssl_mapped(exporter.proc.pid) == []
    samples = exporter.scrape()
    assert list(samples.find("cri_up").values()) == [1.0]

    wait_for(lambda: exporter.scrape().find("cri_doctor_check_status"), timeout=120, what="the doctor child's checks")
    assert openssl_mapped(exporter.proc.pid) == []


PROMETHEUS_PROBE = textwrap.dedent("""
    import sys
    sys.argv = ["/usr/local/bin/cri-exporter", "serve"]
    import cri_exporter.cli, cri_exporter.server, cri_exporter.exporter, cri_exporter.exposition
    from cri_exporter import prometheus_on_demand
    servers = ("http.server", "urllib.request", "wsgiref", "prometheus_client.exposition")
    print("before", prometheus_on_demand.loaded(), [m for m in servers if m in sys.modules])
    from prometheus_client import metrics_core  # a submodule, from the package: imported alone
    print("submodule", prometheus_on_demand.loaded())
    import prometheus_client
    from prometheus_client.core import GaugeMetricFamily
    print("after", callable(prometheus_client.generate_latest), prometheus_on_demand.loaded(),
          prometheus_client.core.GaugeMetricFamily is GaugeMetricFamily)
""")


def test_serve_imports_prometheus_clients_submodules_alone_and_the_rest_when_asked():
    out = subprocess.run([sys.executable, "-c", PROMETHEUS_PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["before False []", "submodule False", "after True True True"], out.stdout


GRPC_AIO_PROBE = textwrap.dedent("""
    import sys
    sys.argv = ["/usr/local/bin/cri-exporter", "serve"]
    import cri_exporter.cli, cri_exporter.server, cri_exporter.exporter, cri_exporter.cri.client
    import cri_exporter.runtime_processes, cri_exporter.memory_tuning, cri_exporter.doctor.facts.crio
    from cri_exporter import prometheus_on_demand
    import grpc
    print("before", prometheus_on_demand.loaded("grpc.aio"), sorted(m for m in sys.modules if m.startswith("grpc.aio")),
          [m for m in ("http.client", "email.parser", "shutil", "tempfile") if m in sys.modules],
          cri_exporter.memory_tuning.tune_malloc()["MALLOC_MMAP_THRESHOLD_"])
    channel = grpc.aio.insecure_channel("unix:///nonexistent.sock")  # a name of grpc.aio: the package runs
    from grpc.aio import _channel
    print("after", prometheus_on_demand.loaded("grpc.aio"), type(channel) is _channel.Channel,
          grpc.aio.AioRpcError.__module__, sys.modules["grpc.aio"] is grpc.aio)
""")


def test_serve_imports_grpc_without_its_asyncio_api_and_the_api_when_asked():
    """grpc's `__init__` imports grpc.aio (0.5 MB) for every process; `serve`'s CRI client is the
    synchronous one, so serve has a shell there, and the real package once anything asks it a name.
    Nor does serve import http.client (CRI-O's running config, the doctor's) or shutil and tempfile
    (ctypes.util's; the malloc tuning finds glibc by the process's own symbols and still tunes it)."""
    out = subprocess.run([sys.executable, "-c", GRPC_AIO_PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["before False ['grpc.aio'] [] True", "after True True grpc.aio._call True"], out.stdout

