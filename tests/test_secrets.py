"""No secret leaves the process, and nothing outside --host-root is read.

A host tree gets secrets planted where operators really put them (issue 17:
systemd Environment= lines, proxy URLs with only a user or no scheme,
dotted TOML keys and multi-line strings, custom auth headers in hosts.toml
and registry.headers, the runtime's verbose status JSON, CNI configs, a
stray file beside the CNI configs), some only in base64 form. Every output
is then grepped for each secret and its base64: `doctor` text and JSON,
the bundle, serve's /doctor and the logs of both.
"""
from __future__ import annotations

import base64
import gzip
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import structlog

from cri_exporter.redact import REDACTED, redact_data, redact_text
from tests.exporter_proc import REPO, ExporterProcess, wait_for
from tests.test_doctor_support import FakeCriServer, FakeRuntime, copy_fixture, write


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


PLANTED = {  # host path -> text; every "planted-..." word is a secret
    "/etc/systemd/system/containerd.service.d/http-proxy.conf": (
        '[Service]\n'
        'Environment="AWS_ACCESS_KEY_ID=AKIAPLANTED0000001" "AWS_SECRET_ACCESS_KEY=planted-aws-secret-02"\n'
        'Environment=REGISTRY_PASSWORD=planted-regpass-03 GOTRACEBACK=all\n'
        "Environment='GITHUB_TOKEN=planted-ghtoken-04'\n"
        'Environment="HTTP_PROXY=proxyuser:planted-proxypass-05@proxy.internal:3128"\n'
        'Environment="HTTPS_PROXY=http://planted-proxytoken-06@proxy.internal:3128"\n'
        'Environment="NO_PROXY=10.0.0.0/8,.cluster.local"\n'),
    "/run/systemd/system/containerd.service.d/20-api.conf": (
        '[Service]\nEnvironment=VENDOR_API_KEY=planted-apikey-07\n'),
    "/usr/lib/systemd/system/containerd.service": (
        '[Unit]\nDescription=containerd\n[Service]\nExecStart=/usr/bin/containerd\n'
        'Environment="CONTAINERD_CREDENTIALS=planted-creds-08"\nDelegate=yes\nKillMode=process\n'
        'LimitNOFILE=infinity\n'),
    "/etc/containerd/config.toml": (  # appended to the fixture's
        '[plugins."io.containerd.grpc.v1.cri".registry.configs."dotted.example"]\n'
        f'  auth.auth = "{b64("robot:planted-dotted-09")}"\n'
        '  auth.password = """\nplanted-multiline-10\n"""\n'
        '[plugins."io.containerd.grpc.v1.cri".registry.headers]\n'
        '  X-Api-Key = ["planted-regheader-11"]\n'),
    "/etc/containerd/certs.d/quay.io/hosts.toml": (
        'server = "https://robot:planted-serverpass-12@quay.io"\n'
        '[host."https://artifactory.internal/v2/quay"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        '  [host."https://artifactory.internal/v2/quay".header]\n'
        '    X-JFrog-Art-Api = "planted-jfrog-13"\n'
        f'    Authorization = "Basic {b64("svc:planted-basic-14")}"\n'),
    "/etc/cni/net.d/30-vendor.conf": json.dumps({
        "cniVersion": "0.4.0", "name": "vendor", "type": "vendor-cni",
        "etcd_endpoints": "https://etcd:2379", "etcd_password": "planted-etcd-15",
        "api_key": "planted-cnikey-16", "kubernetes": {"kubeconfig": "/etc/cni/net.d/vendor-kubeconfig"}}),
    "/etc/cni/net.d/vendor-kubeconfig": "users:\n- user:\n    token: planted-stray-17\n",
    "/etc/cni/net.d/NOTES.txt": "the vendor's admin login is admin / planted-stray-18\n",
}
STATUS_SECRETS = ("planted-status-header-19", "planted-status-pass-20")


def secrets() -> list[str]:
    planted = set(re.findall(r"planted-[a-z-]+?-\d\d", "\n".join(PLANTED.values())))
    # and those planted only in base64 form
    return sorted(planted | set(STATUS_SECRETS) | {"AKIAPLANTED0000001", "planted-dotted-09", "planted-basic-14"})


def leaks(blob: bytes | str) -> list[str]:
    raw = blob if isinstance(blob, bytes) else blob.encode()
    return [s for s in secrets() if s.encode() in raw or b64(s).encode() in raw
            or b64(f"robot:{s}").encode() in raw or b64(f"svc:{s}").encode() in raw]


@pytest.fixture
def leaky_host(tmp_path):
    """The bundle-secrets fixture plus the issue's classes, and a fake runtime
    whose verbose Status carries registry headers and credentials."""
    root = copy_fixture("bundle-secrets", tmp_path)
    for path, text in PLANTED.items():
        existing = root / path.lstrip("/")
        write(root, path, (existing.read_text() if existing.exists() else "") + text)
    fake = FakeRuntime(images=[("registry.k8s.io/pause:3.10", True)])
    fake.running_config(sandboxImage="registry.k8s.io/pause:3.10", registry={
        "configPath": "/etc/containerd/certs.d",
        "headers": {"X-Api-Key": ["planted-status-header-19"]},
        "configs": {"quay.io": {"auth": {"username": "robot", "password": "planted-status-pass-20"}}}})
    with FakeCriServer(root / "run/containerd/containerd.sock", fake):
        yield root


def run_doctor(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cri_exporter", "doctor", "--host-root", str(root), *args],
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)


def test_the_planted_secrets_are_where_the_doctor_looks(leaky_host):
    """The test is only worth something if the doctor reads these files and
    quotes them: the redacted forms show up where the secrets were."""
    out = run_doctor(leaky_host, "-o", "json")
    report = json.loads(out.stdout)
    details = {c["id"]: c["detail"] for c in report["checks"]}
    assert "https://REDACTED@quay.io" in details["containerd.registry.hosts"]
    assert len(secrets()) >= 20


def test_doctor_text_json_and_logs_hold_no_secret(leaky_host):
    for output in ("text", "json"):
        out = run_doctor(leaky_host, "-o", output)
        assert out.returncode in (0, 1), out.stderr.decode()
        assert not leaks(out.stdout), (output, leaks(out.stdout))
        assert not leaks(out.stderr), (output, leaks(out.stderr))


def test_the_bundle_holds_no_secret_and_only_files_the_checks_read(leaky_host, tmp_path):
    bundle = tmp_path / "b.tar.gz"
    out = run_doctor(leaky_host, "-o", "json", "--bundle", str(bundle))
    assert out.returncode in (0, 1), out.stderr.decode()
    raw = gzip.decompress(bundle.read_bytes())
    assert not leaks(raw), leaks(raw)
    with tarfile.open(bundle) as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read().decode() for m in tar.getmembers()}
    # read by the checks: the units, drop-ins, the imported registry file, hosts.toml, the CNI configs
    for path in PLANTED:
        if "vendor-kubeconfig" in path or path.endswith(".txt"):
            assert f"files{path}" not in files, path  # no check reads them
        else:
            assert f"files{path}" in files, (path, sorted(files))
    unit = files["files/etc/systemd/system/containerd.service.d/http-proxy.conf"]
    assert f"REGISTRY_PASSWORD={REDACTED} GOTRACEBACK=all" in unit  # the variable's name stays
    assert "NO_PROXY=10.0.0.0/8,.cluster.local" in unit and "@proxy.internal:3128" in unit
    assert "X-JFrog-Art-Api" in files["files/etc/containerd/certs.d/quay.io/hosts.toml"]
    runtime = json.loads(files["runtime.json"])
    assert runtime["status"]["info"]["config"]["registry"]["headers"] == {"X-Api-Key": [REDACTED]}
    assert "/etc/cni/net.d/30-vendor.conf" in files["files.txt"]


def test_serve_doctor_endpoint_and_log_hold_no_secret(leaky_host, tmp_path):
    sock = leaky_host / "run/containerd/containerd.sock"
    with ExporterProcess(f"unix://{sock}", "--host-root", str(leaky_host), "--collectors", "runtime,doctor",
                         log_path=tmp_path / "serve.log") as proc:
        body = wait_for(lambda: (lambda r: r[2] if r[0] == 200 else None)(proc.get("/doctor")),
                        timeout=60, what="serve's first doctor report")
        assert "https://REDACTED@quay.io" in body.decode()
        assert not leaks(body), leaks(body)
        assert not leaks(proc.text())
    assert not leaks(proc.log()), leaks(proc.log())


def test_log_lines_are_redacted(capsys):
    from cri_exporter import logsetup

    logsetup.configure("json")
    try:
        structlog.get_logger("t").warning("pull failed", url="https://u:planted-log-1@reg", password="planted-log-2",
                                          error=ValueError('auth = "planted-log-3"'), items=["Bearer planted-log-4x"])
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    assert "planted-log" not in err and err.count(REDACTED) == 4, err
    assert json.loads(err)["url"] == "https://REDACTED@reg"


@pytest.mark.parametrize("text, kept", [
    ('tls_key_file = "/etc/ssl/k.pem"\nconfig_path = "/etc/containerd/certs.d"\nkeyFile: /x\n', True),
    ('sandbox_image = "registry.k8s.io/pause:3.10@sha256:0123abcd"\n', True),
    ('image: myorg/token-service:1.0\n', True),
    ('why: Basic authentication is off; a Bearer token is needed\n', True),
    ('certificate-authority-data: LS0tLS1CRUdJTi\n', True),
    ('[host."https://token.example.com"]\n  capabilities = ["pull"]\n', True),
    ('authentication:\n  anonymous:\n    enabled: false\n', True),
])
def test_redaction_keeps_what_is_no_secret(text, kept):
    assert (redact_text(text) == text) is kept


@pytest.mark.parametrize("text, secret", [
    ('password = "p1"', "p1"),
    ("auth.auth = 'p2'", "p2"),
    ('configs."r".auth.password = "p3"', "p3"),
    ('[a.b."c".auth]\nweird_field = "p4"', "p4"),
    ('[host."h".header]\nX-Anything = ["p5"]', "p5"),
    ('password = """\np6\n"""', "p6"),
    ("password = '''p7\n'''", "p7"),
    ('token = [\n  "p8",\n]', "p8"),
    ('x = { username = "u", password = "p9" }', "p9"),
    ('{"apiKey":"p10","type":"x"}', "p10"),
    ('"headers": {\n    "X-Custom": ["p11"]\n  }', "p11"),
    ('staticPodURLHeader:\n  Authorization:\n  - p12', "p12"),
    ('client-key-data: p13', "p13"),
    ('Environment="A=1" "MY_SECRET=p14"', "p14"),
    ('Environment=TOKEN=p15', "p15"),
    ('export REGISTRY_PW=p16', "p16"),
    ('HTTP_PROXY=user:p17@proxy:3128', "p17"),
    ('https_proxy=http://p18@proxy:3128', "p18"),
    ('ExecStart=/usr/bin/kubelet --token p19 --v=2', "p19"),
    ('KUBELET_ARGS="--bootstrap-token=p20.abcdef"', "p20"),
    ('Authorization: Bearer p21-0123456789', "p21"),
    ('curl -H "Authorization: Basic cDIyOnNlY3JldA=="', "cDIyOnNlY3JldA"),
    ('jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwMjMifQ.c2ln', "eyJzdWIiOiJwMjMifQ"),
    ('-----BEGIN EC PRIVATE KEY-----\np24\n-----END EC PRIVATE KEY-----', "p24"),
    ('"k": "-----BEGIN PRIVATE KEY-----\\np25\\n-----END PRIVATE KEY-----"', "p25"),
    ('key: |\n  p26\n  more\nnext: 1', "p26"),
])
def test_redaction_removes_each_class(text, secret):
    out = redact_text(text)
    assert secret not in out and REDACTED in out, out


def test_redact_data_keeps_keys_and_structure():
    data = {"registry": {"headers": {"X-Meta": ["a"]}, "configs": {"r": {"auth": {"username": "u", "password": "p"}}}},
            "mirror": "http://user:pw@m", "n": 3}
    assert redact_data(data) == {
        "registry": {"headers": {"X-Meta": [REDACTED]}, "configs": {"r": {"auth": {"username": REDACTED,
                                                                                    "password": REDACTED}}}},
        "mirror": f"http://{REDACTED}@m", "n": 3}


@pytest.mark.parametrize("unit", ["-", "=", '"', ":", "a=", 'a:"', '"\\', "a:b=", "http://", 'k="v" ', "[a.header]\n",
                                  "key:\n ", '["', "a.", '"a".', "--x ", "Bearer x ", "u:p@"])
def test_redaction_is_linear(unit):
    """A garbled one-line file once took minutes (16 KB of "-" took 35 s).
    1 MB of each pathological shape must take seconds at most even on a
    loaded machine; a quadratic pattern would take hours."""
    text = unit * ((1 << 20) // len(unit))
    start = time.process_time()
    redact_text(text)
    assert time.process_time() - start < 30
