"""The chart's web config (TLS and basic auth, issue 18): what the values
render to, that the objects validate, that values.schema.json refuses the web
config together with kube-rbac-proxy, and that the agent run with the
rendered DaemonSet's args and the Secrets' files where the pod mounts them
answers the kubelet's probe and a scrape as the rendered ServiceMonitor asks."""
from __future__ import annotations

import base64
import json
import ssl
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.exporter_proc import ExporterProcess, parse
from tests.test_deploy import HARDENED, REPO, by_kind, rendered_docs, validate
from tests.webtls import PASSWORD, bcrypt_hash, make_pki, write_config

CHART = REPO / "deploy" / "helm" / "cri-exporter"
WEB = {"webConfig": {"secretName": "cri-exporter-web", "tlsSecretName": "cri-exporter-tls"},
       "serviceMonitor": {"tlsConfig": {"ca": {"secret": {"name": "cri-exporter-tls", "key": "ca.crt"}}, "serverName": "localhost"},
                          "basicAuth": {"username": {"name": "scrape", "key": "username"},
                                        "password": {"name": "scrape", "key": "password"}}}}


def schema_errors(values: dict) -> list[str]:
    schema = json.loads((CHART / "values.schema.json").read_text())
    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    for key, value in values.items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) else value
    return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(merged)]


def agent_of(docs: list[dict]) -> tuple[dict, dict]:
    (ds,) = by_kind(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    return pod, next(c for c in pod["containers"] if c["name"] == "cri-exporter")


def test_values_schema_takes_the_defaults_and_refuses_both_ways_at_once():
    assert schema_errors({}) == [] and schema_errors(WEB) == [] and schema_errors(HARDENED) == []
    assert schema_errors({**WEB, **HARDENED})  # one or the other
    assert schema_errors({"webConfig": {"secretname": "x"}})  # a typo is no silent default


def test_web_config_values_render_mounts_args_probe_and_scrape_config():
    docs = rendered_docs({**WEB, "doctorEndpoint": False})
    for doc in docs:
        validate(doc)
    pod, agent = agent_of(docs)
    assert "--web-config-file=/etc/cri-exporter/web/web-config.yml" in agent["args"]
    assert "--no-doctor-endpoint" in agent["args"]
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for name, secret, path in (("web-config", "cri-exporter-web", "/etc/cri-exporter/web"),
                               ("web-tls", "cri-exporter-tls", "/etc/cri-exporter/tls")):
        assert mounts[name] == {"name": name, "mountPath": path, "readOnly": True}  # no subPath: updates arrive
        assert volumes[name]["secret"] == {"secretName": secret, "defaultMode": 0o400}
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9920, "scheme": "HTTPS"}
    (endpoint,) = by_kind(docs, "ServiceMonitor")[0]["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"] == WEB["serviceMonitor"]["tlsConfig"]
    assert endpoint["basicAuth"] == WEB["serviceMonitor"]["basicAuth"]

    # client certificates required: the probe can only see the port accept
    _, agent = agent_of(rendered_docs({"webConfig": {"secretName": "w", "clientCertificates": True}}))
    assert agent["livenessProbe"]["tcpSocket"] == {"port": 9920} and "httpGet" not in agent["livenessProbe"]
    # no CA for Prometheus: said, not guessed
    (endpoint,) = by_kind(rendered_docs({"webConfig": {"secretName": "w"}}), "ServiceMonitor")[0]["spec"]["endpoints"]
    assert endpoint["tlsConfig"] == {"insecureSkipVerify": True} and "basicAuth" not in endpoint
    # basic auth over HTTP (a file without tls_server_config)
    docs = rendered_docs({"webConfig": {"secretName": "w", "https": False}})
    assert by_kind(docs, "ServiceMonitor")[0]["spec"]["endpoints"][0]["scheme"] == "http"
    assert "scheme" not in agent_of(docs)[1]["livenessProbe"]["httpGet"]


@pytest.mark.containerd
@pytest.mark.newest_runtime  # the chart's web config, not the runtime, is under test
def test_the_agent_as_the_chart_runs_it_answers_the_probe_and_the_servicemonitors_scrape(containerd, pods, tmp_path):
    """The Secrets as `kubectl create secret` makes them (tls: tls.crt, tls.key,
    ca.crt; the web config; the scrape credentials), their files where the pod
    mounts them, and the rendered args."""
    pki = make_pki(tmp_path / "pki")
    etc = tmp_path / "etc" / "cri-exporter"
    tls_dir, web_dir = etc / "tls", etc / "web"
    tls_dir.mkdir(parents=True)
    web_dir.mkdir()
    for key, source in (("tls.crt", pki.cert_file), ("tls.key", pki.key_file), ("ca.crt", pki.ca_file)):
        (tls_dir / key).write_bytes(source.read_bytes())
    # the docs' example names /etc/cri-exporter/tls/...: here, where this test keeps it
    write_config(web_dir / "web-config.yml", {
        "tls_server_config": {"cert_file": str(tls_dir / "tls.crt"), "key_file": str(tls_dir / "tls.key")},
        "basic_auth_users": {"prometheus": bcrypt_hash(PASSWORD)}})
    scrape_secret = {"username": "prometheus", "password": PASSWORD}

    docs = rendered_docs(WEB)
    _, agent = agent_of(docs)
    args = [a.replace("/etc/cri-exporter", str(etc)) for a in agent["args"][1:]
            if not a.startswith(("--host-root=", "--listen-address="))]
    (endpoint,) = by_kind(docs, "ServiceMonitor")[0]["spec"]["endpoints"]
    ca = tls_dir / endpoint["tlsConfig"]["ca"]["secret"]["key"]
    prometheus = ssl.create_default_context(cafile=str(ca))
    credentials = f"{scrape_secret[endpoint['basicAuth']['username']['key']]}:{scrape_secret[endpoint['basicAuth']['password']['key']]}"
    auth = {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}
    with ExporterProcess(containerd.endpoint, "--host-root", "/", *args, tls=prometheus, auth=auth) as exp:
        # the kubelet's HTTPS probe: no certificate verification, no credentials
        kubelet = ssl.create_default_context()
        kubelet.check_hostname, kubelet.verify_mode = False, ssl.CERT_NONE
        probe = agent["livenessProbe"]["httpGet"]
        assert probe["scheme"] == "HTTPS"
        with urllib.request.urlopen(exp.url + probe["path"], context=kubelet, timeout=15) as r:
            assert (r.status, r.read()) == (200, b"ok\n")
        status, _, body = exp.get(endpoint["path"])
        assert status == 200 and parse(body.decode()).get1("cri_up") == 1
        assert exp.get(endpoint["path"], headers={"Authorization": ""})[0] == 401


def test_doc_paths_match_the_chart():
    text = Path(REPO / "docs" / "install.md").read_text()
    assert "/etc/cri-exporter/web/web-config.yml" in text and "/etc/cri-exporter/tls/tls.crt" in text
