"""Deployment artefacts, offline: manifests, chart, unit file, image recipe.

Every Kubernetes object validates against the Kubernetes schemas
(kubernetes-validate, strict) and every prometheus-operator object against the
CRD schemas vendored in deploy/schemas/; the generated files are current; the
systemd unit passes `systemd-analyze verify`.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml

from codegen import deploy as gen_deploy
from cri_exporter import __version__
from cri_exporter.cli import serve
from cri_exporter.doctor.cli import doctor

REPO = Path(__file__).resolve().parents[1]

DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "cri-exporter"
MANIFESTS = DEPLOY / "kubernetes"
# The oldest Kubernetes the chart declares (recursiveReadOnly appeared in
# 1.30) and the newest kubernetes-validate knows.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): DEPLOY / "schemas" / "servicemonitor-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): DEPLOY / "schemas" / "prometheusrule-monitoring.coreos.com-v1.json",
}
HARDENED = {"kubeRbacProxy": {"enabled": True}}


def _strict(schema):
    """The CRD's openAPIV3Schema, rejecting unknown fields as `kubectl apply`'s
    strict field validation does (the API server would prune them silently)."""
    schema = copy.deepcopy(schema)

    def walk(s):
        if isinstance(s, dict):
            if "properties" in s and "additionalProperties" not in s and not s.get("x-kubernetes-preserve-unknown-fields"):
                s["additionalProperties"] = False
            for v in s.values():
                walk(v)
        elif isinstance(s, list):
            for v in s:
                walk(v)

    walk(schema)
    return schema


_CRD_VALIDATORS = {k: jsonschema.Draft7Validator(_strict(json.loads(p.read_text()))) for k, p in CRD_SCHEMAS.items()}


def validate(doc: dict) -> None:
    """Raise on the first schema violation of one object."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in _CRD_VALIDATORS:
        # The metadata of a custom resource is checked like any ObjectMeta.
        errors = sorted(_CRD_VALIDATORS[key].iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, f"{key[1]} {doc['metadata'].get('name')}: " + "; ".join(
            f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])
        probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
        for v in K8S_VERSIONS:
            kubernetes_validate.validate(probe, v, strict=True)
        return
    for v in K8S_VERSIONS:
        kubernetes_validate.validate(doc, v, strict=True)


def docs_of(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def manifest_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.rglob("*.yaml") if p.name != "kustomization.yaml")


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def rendered_docs(values: dict | None = None) -> list[dict]:
    return [d for text in gen_deploy.render_chart(values=values).values() for d in docs_of(text)]


# ---- generated and current ------------------------------------------------------

def test_alert_rules_exist_for_the_prometheusrule():
    assert gen_deploy.ALERTS_RULE.exists(), (
        "alerts/prometheusrule.yaml is missing: the deployed PrometheusRule is generated from it "
        "(run `python -m codegen`)")


def test_generated_files_are_current():
    stale = gen_deploy.stale(gen_deploy.generate())
    assert not stale, ("stale, run `.venv/bin/python -m codegen`: "
                       + ", ".join(str(p.relative_to(REPO)) for p in stale))


@pytest.mark.parametrize("path", [MANIFESTS / "prometheusrule.yaml", MANIFESTS / "hardened" / "prometheusrule.yaml"],
                         ids=["plain", "hardened"])
def test_prometheusrule_carries_exactly_the_alerts_rules(path):
    deployed = docs_of(path.read_text())[0]
    source = yaml.safe_load(gen_deploy.ALERTS_RULE.read_text())
    assert deployed["spec"] == source["spec"]
    assert deployed["metadata"]["namespace"] == gen_deploy.NAMESPACE


def test_kustomizations_list_every_manifest():
    for directory in (MANIFESTS, MANIFESTS / "hardened"):
        k = yaml.safe_load((directory / "kustomization.yaml").read_text())
        assert sorted(k["resources"]) == sorted(p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml")


def test_chart_app_version_is_the_agents():
    chart = yaml.safe_load((DEPLOY / "helm" / "cri-exporter" / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__


# ---- valid against the schemas --------------------------------------------------

@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_manifest_validates(path):
    docs = docs_of(path.read_text())
    assert docs, f"{path} holds no object"
    for doc in docs:
        validate(doc)


VALUE_SETS = {
    "defaults": {},
    "hardened": HARDENED,
    "everything-off": {"serviceMonitor": {"enabled": False}, "rules": {"enabled": False}},
    "everything-set": {
        "runtimeEndpoint": "unix:///host/run/crio/crio.sock", "collectors": "-doctor",
        "extraArgs": ["--stats-interval=30", "--doctor-interval=600"], "priorityClassName": "system-node-critical",
        "runtimeShimLeakGrace": 600, "agent": {"ephemeralStorageInterval": "120", "fdSampleBudget": "20000"},
        "runtimes": {"containerd": False}, "namespace": {"create": True},
        "serviceMonitor": {"labels": {"release": "kube-prometheus-stack"}, "interval": "1m", "scrapeTimeout": "20s"},
        "rules": {"labels": {"release": "kube-prometheus-stack"}},
        "image": {"tag": "9.9.9"}, "resources": {"requests": {"cpu": "50m"}},
    },
    "hardened-no-readers": {**HARDENED, "kubeRbacProxy": {"enabled": True, "metricsReaders": []}},
}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_chart_renders_valid_objects(name):
    docs = rendered_docs(VALUE_SETS[name])
    assert by_kind(docs, "DaemonSet")
    for doc in docs:
        validate(doc)


def test_chart_values_switch_what_they_name():
    off = rendered_docs(VALUE_SETS["everything-off"])
    assert not by_kind(off, "ServiceMonitor") and not by_kind(off, "PrometheusRule")
    assert not by_kind(rendered_docs(), "Namespace")

    docs = rendered_docs(VALUE_SETS["everything-set"])
    (ds,) = by_kind(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    assert agent["image"] == "ghcr.io/cri-exporter/cri-exporter:9.9.9"
    assert "--runtime-endpoint=unix:///host/run/crio/crio.sock" in agent["args"]
    assert "--collectors=-doctor" in agent["args"]
    assert "--runtime-shim-leak-grace=600" in agent["args"]
    assert serve_options()["--runtime-shim-leak-grace"].type_cast_value(click.Context(serve), "600") == 600
    assert not [a for a in agent_container(daemonset(False))["args"] if "leak-grace" in a]  # default: the agent's
    # 0, a number as a values file gives it, reaches the agent (a bare `if` would drop it)
    (zero,) = by_kind(rendered_docs({"runtimeShimLeakGrace": 0}), "DaemonSet")[0]["spec"]["template"]["spec"]["containers"]
    assert "--runtime-shim-leak-grace=0" in zero["args"]
    assert "--ephemeral-storage-interval=120" in agent["args"] and "--fd-sample-budget=20000" in agent["args"]
    assert agent["args"][-2:] == ["--stats-interval=30", "--doctor-interval=600"]
    assert agent["resources"]["requests"]["cpu"] == "50m"
    assert pod["priorityClassName"] == "system-node-critical"
    assert not any("containerd" in v["name"] for v in pod["volumes"])
    assert by_kind(docs, "ServiceMonitor")[0]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert by_kind(docs, "ServiceMonitor")[0]["spec"]["endpoints"][0]["interval"] == "1m"
    assert by_kind(docs, "PrometheusRule")[0]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert by_kind(docs, "Namespace")[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


# Every `serve` flag and how the chart sets it: a value of its own, or a fixed argument of the template.
FIXED_BY_THE_CHART = {"--host-root": "/host, where the DaemonSet mounts the node", "--log-format": "json, for the log pipeline",
                      "--listen-address": "from `port` (and 127.0.0.1 with kubeRbacProxy)"}


def _agent_values() -> dict[str, tuple[str, str]]:
    """values.yaml's `agent` keys -> (the flag its comment names, the default its comment states)."""
    out, flag, default = {}, None, None
    lines = (CHART / "values.yaml").read_text().split("\n")
    start = lines.index("agent:")
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        if line.strip().startswith("# --"):
            flag = line.strip()[2:].split(":")[0]
            default = line.rsplit("(the agent's ", 1)[1].split(")")[0].split(":")[0] if "(the agent's" in line else None
        else:
            out[line.split(":")[0].strip()] = (flag, default)
    return out


def test_every_serve_flag_has_a_chart_value():
    """A flag added to `serve` without a chart value is a setting Helm users can reach only through
    extraArgs: the template names every flag, as an argument of its own value or a fixed one."""
    template = (CHART / "templates" / "daemonset.yaml").read_text()
    missing = [p.opts[0] for p in serve.params if p.opts[0] != "--help"
               and not any(f"- {o}" in template for o in [*p.opts, *p.secondary_opts])]
    assert not missing, f"serve flags the chart cannot set: {missing}"
    assert all(f"- {flag}" in template for flag in FIXED_BY_THE_CHART)


def test_agent_values_name_their_flag_and_its_default():
    """Each `agent` value passes its flag as a string, and its comment states the agent's own default."""
    options = serve_options()
    values = _agent_values()
    assert values and all(flag for flag, _ in values.values())
    ctx = click.Context(serve)
    for key, (flag, default) in values.items():
        option = options[flag]
        assert default is not None, f"{key}: its comment states no default"
        want = option.default if option.default < 1 << 20 else f"{option.default // (1 << 20)} MiB"
        assert default == str(want).removesuffix(".0"), (key, default, option.default)
        (agent,) = by_kind(rendered_docs({"agent": {key: "0.5" if option.type.name != "integer range" else "4096"}}),
                           "DaemonSet")[0]["spec"]["template"]["spec"]["containers"]
        (arg,) = [a for a in agent["args"] if a.startswith(flag + "=")]
        option.type_cast_value(ctx, arg.split("=", 1)[1])
    # defaults: no flag, the agent's default applies
    assert not [a for a in agent_container(daemonset(False))["args"] if a.split("=")[0] in {f for f, _ in values.values()}]


def test_agent_values_are_strings_that_keep_a_zero():
    """0 is a meaningful setting (--ephemeral-storage-files-per-second=0: unpaced) that Helm's `if`
    would drop as a number, and a number from a values file is printed as a float (1.6777216e+07):
    the schema takes strings only, and the string "0" reaches the agent."""
    schema = jsonschema.Draft7Validator(json.loads((CHART / "values.schema.json").read_text()))
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert not list(schema.iter_errors(defaults))
    for bad in (0, 16777216, "1e6", "ten", "-1"):
        assert list(schema.iter_errors({**defaults, "agent": {"grpcMaxRecvBytes": bad}})), bad
    assert list(schema.iter_errors({**defaults, "agent": {"statsIntervall": "30"}})), "a typo is no silent default"
    assert not list(schema.iter_errors({**defaults, "agent": {"ephemeralStorageFilesPerSecond": "0"}}))
    (agent,) = by_kind(rendered_docs({"agent": {"ephemeralStorageFilesPerSecond": "0"}}),
                       "DaemonSet")[0]["spec"]["template"]["spec"]["containers"]
    assert "--ephemeral-storage-files-per-second=0" in agent["args"]


# ---- what the DaemonSet promises ------------------------------------------------

def daemonset(hardened: bool = False) -> dict:
    path = MANIFESTS / ("hardened" if hardened else "") / "daemonset.yaml"
    return docs_of(path.read_text())[0]


def agent_container(ds: dict) -> dict:
    return next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "cri-exporter")


def serve_options() -> dict[str, click.Option]:
    return {opt: p for p in serve.params for opt in p.opts}


def parse_args(args: list[str]) -> dict[str, str]:
    out = {}
    for a in args[1:]:
        flag, _, value = a.partition("=")
        out[flag] = value
    return out


@pytest.mark.parametrize("hardened", [False, True], ids=["plain", "hardened"])
def test_daemonset_is_locked_down(hardened):
    ds = daemonset(hardened)
    pod = ds["spec"]["template"]["spec"]
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["privileged"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}, "no capability is added back: measured unnecessary"
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert not pod.get("hostPID") and not pod.get("hostIPC")
    assert pod["enableServiceLinks"] is False, "a Service's CRI_EXPORTER_* variables would read as settings"
    assert pod["tolerations"] == [{"operator": "Exists"}], "must tolerate every taint"
    # The agent never talks to the API server: no token in its container, in either variant. The
    # pod-wide automount would mount one in every container; kube-rbac-proxy gets its own instead.
    assert pod["automountServiceAccountToken"] is False
    (sa,) = by_kind(docs_of((MANIFESTS / ("hardened" if hardened else "") / "serviceaccount.yaml").read_text()),
                    "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    tokens = {v["name"] for v in pod["volumes"]
              if any("serviceAccountToken" in src for src in v.get("projected", {}).get("sources", []))}
    for c in pod["containers"]:
        held = {m["name"] for m in c.get("volumeMounts") or []} & tokens
        assert held == ({"kube-api-access"} if c["name"] == "kube-rbac-proxy" else set()), (c["name"], held)
        for m in c.get("volumeMounts") or []:
            # Read-only wherever it can be: /tmp (the doctor's --bundle) is the one writable mount.
            assert m.get("readOnly") is True or volumes[m["name"]] == {
                "name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}, (c["name"], m)
    assert bool(tokens) is hardened
    if hardened:
        proxy = next(c for c in pod["containers"] if c["name"] == "kube-rbac-proxy")
        (m,) = [m for m in proxy["volumeMounts"] if m["name"] == "kube-api-access"]
        assert m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount", "where client-go's in-cluster config reads"
        paths = {item["path"] if "path" in item else item.get("serviceAccountToken", {}).get("path")
                 for src in volumes["kube-api-access"]["projected"]["sources"]
                 for item in (src.get("configMap", src.get("downwardAPI", {})).get("items") or [src])}
        assert {"token", "ca.crt", "namespace"} <= paths, paths
    mounts = {m["name"]: m for m in agent_container(ds)["volumeMounts"]}
    for v in pod["volumes"]:
        if "hostPath" in v:
            assert mounts[v["name"]]["readOnly"] is True, f"{v['name']} must be read-only"
    assert {"/", "/proc", "/sys", "/run/containerd", "/run/crio", "/etc/containerd", "/etc/crio",
            "/var/lib/kubelet"} <= {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    for c in pod["containers"]:
        assert "memory" in c["resources"]["limits"] and "cpu" in c["resources"]["requests"]


@pytest.mark.parametrize("hardened", [False, True], ids=["plain", "hardened"])
def test_every_host_path_is_mounted_at_its_place_under_host_root(hardened):
    """--host-root joins the host path to the root: each hostPath must sit at root + its own path."""
    ds = daemonset(hardened)
    agent = agent_container(ds)
    root = parse_args(agent["args"])["--host-root"]
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    for m in agent["volumeMounts"]:
        host = volumes[m["name"]].get("hostPath")
        if host:
            assert m["mountPath"] == os.path.normpath(root + "/" + host["path"]), m


def _kubelet_mount(docs: list[dict]) -> tuple[dict, dict]:
    (ds,) = by_kind(docs, "DaemonSet")
    volume = next(v for v in ds["spec"]["template"]["spec"]["volumes"] if v["name"] == "kubelet")
    return next(m for m in agent_container(ds)["volumeMounts"] if m["name"] == "kubelet"), volume


@pytest.mark.parametrize("hardened", [False, True], ids=["plain", "hardened"])
def test_kubelet_root_is_mounted_with_host_to_container_propagation(hardened):
    """Mounts the kubelet makes after the agent started (a new pod's memory emptyDir) and its
    unmounts reach the agent: HostToContainer (rslave) on the kubelet root, as node_exporter's
    DaemonSets mount the node's /. tests/test_image.py shows a mount made after the start
    reaching the running agent."""
    mount, volume = _kubelet_mount(docs_of((MANIFESTS / ("hardened" if hardened else "") / "daemonset.yaml").read_text()))
    assert mount["mountPropagation"] == "HostToContainer" and mount["readOnly"] is True
    assert volume["hostPath"]["path"] == "/var/lib/kubelet"


def test_no_mount_asks_for_recursive_read_only_with_propagation():
    """The API server refuses a volumeMount whose recursiveReadOnly is IfPossible or Enabled and whose
    mountPropagation is not None (kubernetes-validate's schemas cannot say so): every rendering keeps them apart."""
    for name, values in {**VALUE_SETS, "kubelet-none": {"kubelet": {"mountPropagation": "None"}},
                         "host-root-none": {"hostRoot": {"mountPropagation": "None"}}}.items():
        (ds,) = by_kind(rendered_docs(values), "DaemonSet")
        for c in ds["spec"]["template"]["spec"]["containers"]:
            for m in c.get("volumeMounts") or []:
                if m.get("recursiveReadOnly", "Disabled") != "Disabled":
                    assert m.get("mountPropagation", "None") == "None", (name, m)


def test_kubelet_values_move_the_mount_and_choose_the_propagation():
    """A kubelet with --root-dir=/data/kubelet: its root is mounted at /host/data/kubelet, where
    the agent (--host-root=/host) reads what the kubelet's flags name; None gives the mount back
    its recursiveReadOnly."""
    mount, volume = _kubelet_mount(rendered_docs({"kubelet": {"rootDir": "/data/kubelet"}}))
    assert (mount["mountPath"], volume["hostPath"]["path"]) == ("/host/data/kubelet", "/data/kubelet")
    assert mount["mountPropagation"] == "HostToContainer"
    mount, _ = _kubelet_mount(rendered_docs({"kubelet": {"mountPropagation": "None"}}))
    assert "mountPropagation" not in mount and mount["recursiveReadOnly"] == "IfPossible"
    schema = jsonschema.Draft7Validator(json.loads((CHART / "values.schema.json").read_text()))
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for bad in ({"rootDir": "data/kubelet"}, {"mountPropagation": "Bidirectional"}, {"rootdir": "/x"}):
        assert list(schema.iter_errors({**defaults, "kubelet": {**defaults["kubelet"], **bad}})), bad


def test_host_root_and_containerd_run_propagate_the_nodes_unmounts():
    """The node's / and /run/containerd (which holds the agent's rootfs with its /host) are
    HostToContainer, so the agent keeps no node mount the node unmounted
    (tests/test_image_host_mounts.py); hostRoot.mountPropagation=None gives / back its
    recursiveReadOnly and leaves /run/containerd private."""
    def mounts(docs):
        (ds,) = by_kind(docs, "DaemonSet")
        return {m["name"]: m for m in agent_container(ds)["volumeMounts"]}
    for hardened in (False, True):
        m = mounts(docs_of((MANIFESTS / ("hardened" if hardened else "") / "daemonset.yaml").read_text()))
        for name in ("host-root", "containerd-run"):
            assert m[name]["mountPropagation"] == "HostToContainer" and m[name]["readOnly"] is True, m[name]
    m = mounts(rendered_docs({"hostRoot": {"mountPropagation": "None"}}))
    for name in ("host-root", "containerd-run", "crio-run"):
        assert "mountPropagation" not in m[name] and m[name]["recursiveReadOnly"] == "IfPossible", m[name]
    schema = jsonschema.Draft7Validator(json.loads((CHART / "values.schema.json").read_text()))
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert list(schema.iter_errors({**defaults, "hostRoot": {"mountPropagation": "Bidirectional"}}))


# hostPaths that hold mounts on a node: the node's /, the runtimes' state directories under /run
# (containerd's holds every task's rootfs, the agent's own with its /host among them), the
# kubelet's root (pods' volumes). /proc and /sys hold only virtual filesystems (cgroup, bpf,
# debugfs, binfmt_misc) that pin no device, and writable ones the agent must not write (a
# cgroup's memory.max): recursively read-only instead. /etc/containerd and /etc/crio: configs.
PROPAGATED = {"/", "/run/containerd", "/run/crio", "/var/lib/kubelet"}


@pytest.mark.parametrize("name", ["defaults", "hardened", "host-root-none", "kubelet-none"])
def test_every_host_path_propagates_or_is_recursively_read_only(name):
    """Every hostPath mount is read-only, and either follows the node's mounts (HostToContainer:
    the node's unmounts reach the agent, tests/test_image_host_mounts.py) or is recursively
    read-only (Kubernetes allows recursiveReadOnly only without propagation): never a private
    bind that is read-only at its top alone. By default exactly the directories that hold node
    mounts propagate; each Helm value that turns propagation off turns recursiveReadOnly on."""
    values = {"defaults": {}, "hardened": HARDENED, "host-root-none": {"hostRoot": {"mountPropagation": "None"}},
              "kubelet-none": {"kubelet": {"mountPropagation": "None"}}}[name]
    (ds,) = by_kind(rendered_docs(values), "DaemonSet")
    paths = {v["name"]: v["hostPath"]["path"] for v in ds["spec"]["template"]["spec"]["volumes"] if "hostPath" in v}
    propagated = set()
    for m in agent_container(ds)["volumeMounts"]:
        if m["name"] not in paths:
            continue
        assert m["readOnly"] is True, m
        if m.get("mountPropagation", "None") == "None":
            assert m.get("recursiveReadOnly") == "IfPossible", m
        else:
            assert m["mountPropagation"] == "HostToContainer" and "recursiveReadOnly" not in m, m
            propagated.add(paths[m["name"]])
    assert paths.keys() >= {"host-root", "host-proc", "host-sys", "containerd-run", "crio-run", "kubelet"}
    want = {"host-root-none": {"/var/lib/kubelet"}, "kubelet-none": PROPAGATED - {"/var/lib/kubelet"}}
    assert propagated == want.get(name, PROPAGATED)


def test_install_doc_mounts_k3s_and_microk8s_directories_with_propagation():
    """The docs' snippet for mounting k3s/RKE2's (or microk8s's) containerd directory: it holds
    the tasks' rootfs like /run/containerd, so a private bind of it would pin the node's mounts."""
    text = (REPO / "docs" / "install.md").read_text()
    section = text[text.index("### k3s, RKE2 and microk8s"):]
    snippet = section[section.index("```yaml") + len("```yaml"):]
    items = yaml.safe_load(snippet[:snippet.index("```")])
    mounts = [i for i in items if "mountPath" in i]
    volumes = {i["name"]: i for i in items if "hostPath" in i}
    assert mounts and {m["name"] for m in mounts} == volumes.keys()
    for m in mounts:
        host = volumes[m["name"]]["hostPath"]["path"]
        assert host.startswith(("/run/k3s", "/var/snap/microk8s")) and m["mountPath"] == "/host" + host, m
        assert m["readOnly"] is True and m["mountPropagation"] == "HostToContainer", m


@pytest.mark.parametrize("hardened", [False, True], ids=["plain", "hardened"])
def test_daemonset_args_are_serve_options(hardened):
    agent = agent_container(daemonset(hardened))
    assert agent["args"][0] == "serve"
    options = serve_options()
    ctx = click.Context(serve)
    for flag, value in parse_args(agent["args"]).items():
        assert flag in options, f"{flag} is not a `cri-exporter serve` option"
        options[flag].type_cast_value(ctx, value)
        if options[flag].callback:
            options[flag].callback(ctx, options[flag], value)


def test_hardened_variant_serves_metrics_only_through_kube_rbac_proxy():
    ds = daemonset(hardened=True)
    pod = ds["spec"]["template"]["spec"]
    agent = agent_container(ds)
    port = gen_deploy.yaml.safe_load((DEPLOY / "helm/cri-exporter/values.yaml").read_text())["port"]
    assert parse_args(agent["args"])["--listen-address"] == f"127.0.0.1:{port}"
    assert "ports" not in agent
    proxy = next(c for c in pod["containers"] if c["name"] == "kube-rbac-proxy")
    assert f"--upstream=http://127.0.0.1:{port}/" in proxy["args"]
    assert proxy["securityContext"]["runAsNonRoot"] is True
    assert pod["hostNetwork"] is True, "127.0.0.1 is shared with the proxy through the pod's network namespace"
    rbac = docs_of((MANIFESTS / "hardened" / "rbac.yaml").read_text())
    rules = [r for d in by_kind(rbac, "ClusterRole") if d["metadata"]["name"] == "cri-exporter-kube-rbac-proxy"
             for r in d["rules"]]
    assert {(r["apiGroups"][0], r["resources"][0]) for r in rules} == {
        ("authentication.k8s.io", "tokenreviews"), ("authorization.k8s.io", "subjectaccessreviews")}
    (sm,) = by_kind(docs_of((MANIFESTS / "hardened" / "servicemonitor.yaml").read_text()), "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["scheme"] == "https"
    assert not (MANIFESTS / "rbac.yaml").exists(), "the plain agent needs no RBAC"


def test_service_and_servicemonitor_give_the_job_the_alerts_select():
    (svc,) = docs_of((MANIFESTS / "service.yaml").read_text())
    (sm,) = docs_of((MANIFESTS / "servicemonitor.yaml").read_text())
    rules = (MANIFESTS / "prometheusrule.yaml").read_text()
    # prometheus-operator names the job after the Service unless jobLabel says otherwise.
    assert "jobLabel" not in sm["spec"]
    assert f'job="{svc["metadata"]["name"]}"' in rules
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    ds = daemonset()
    assert svc["spec"]["selector"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["ports"][0]["targetPort"] in [p["name"] for p in agent_container(ds)["ports"]]


# ---- systemd --------------------------------------------------------------------

UNIT = DEPLOY / "systemd" / "cri-exporter.service"


def _unit_with_stub(tmp_path) -> Path:
    """The unit with ExecStart pointing at a binary that exists here (verify checks it)."""
    stub = tmp_path / "cri-exporter"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/cri-exporter serve" in text
    unit = tmp_path / "cri-exporter.service"
    unit.write_text(text.replace("/usr/local/bin/cri-exporter", str(stub)))
    return unit


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    assert path, "systemd-analyze is missing: apt-get install -y systemd (Debian's package; nothing is started)"
    return path


def test_systemd_unit_verifies(tmp_path):
    unit = _unit_with_stub(tmp_path)
    r = subprocess.run([_systemd_analyze(), "verify", "--man=no", str(unit)], capture_output=True, text=True)
    # Unknown keys are only warnings (exit 0): any output is a failure here.
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stderr + r.stdout


def test_systemd_unit_is_hardened(tmp_path):
    unit = _unit_with_stub(tmp_path)
    # Exposure times ten: 30 is systemd's "OK" band (2.2 when written).
    r = subprocess.run([_systemd_analyze(), "security", "--offline=yes", "--threshold=30", "--no-pager", str(unit)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    text = UNIT.read_text()
    for line in ("ProtectSystem=strict", "ProtectHome=yes", "NoNewPrivileges=yes", "ReadOnlyPaths=/",
                 "CapabilityBoundingSet=\n", "PrivateTmp=yes"):
        assert line in text


# ---- the image recipe -----------------------------------------------------------

def test_dockerfile_is_multistage_and_non_root_by_default():
    lines = [l.strip() for l in (REPO / "Dockerfile").read_text().splitlines() if l.strip() and not l.startswith("#")]
    froms = [l for l in lines if l.startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage"
    final = lines[lines.index(froms[-1]):]
    users = [l.split()[1] for l in final if l.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert not any(l.startswith("ADD ") for l in lines), "COPY only: no remote ADD"
    entry = json.loads(next(l for l in final if l.startswith("ENTRYPOINT ")).split(None, 1)[1])
    cmd = json.loads(next(l for l in final if l.startswith("CMD ")).split(None, 1)[1])
    assert entry == ["cri-exporter"] and cmd[0] == "serve"
    options = serve_options()
    for a in cmd[1:]:
        assert a.split("=")[0] in options
    # What the build copies is in the context .dockerignore leaves.
    ignore = (REPO / ".dockerignore").read_text()
    for l in lines:
        if l.startswith("COPY ") and "--from" not in l:
            for src in l.split()[1:-1]:
                assert f"!{src.rstrip('/')}" in ignore.replace("/\n", "\n"), f"{src} is excluded by .dockerignore"
                assert (REPO / src).exists()


# ---- the docs -------------------------------------------------------------------

def test_install_doc_names_every_flag_and_variable():
    text = (REPO / "docs" / "install.md").read_text()
    for command in (serve, doctor):
        for p in command.params:
            for opt in p.opts:
                if opt.startswith("--") and opt != "--help":
                    assert f"`{opt}" in text, f"docs/install.md does not mention {command.name} {opt}"
            envvars = p.envvar if isinstance(p.envvar, list) else [p.envvar] if p.envvar else []
            for e in envvars:
                assert e in text, f"docs/install.md does not mention {e}"
    assert "kubectl exec" in text and "cri-exporter doctor --host-root /host" in text
    assert "README.md" in text


# ---- the renderer itself --------------------------------------------------------

@pytest.mark.parametrize("src, values, want", [
    ("a\n{{- if .Values.x }}\nyes\n{{- else }}\nno\n{{- end }}\n", {"x": True}, "a\nyes\n"),
    ("a\n{{- if .Values.x }}\nyes\n{{- else }}\nno\n{{- end }}\n", {"x": ""}, "a\nno\n"),
    ("k:\n  {{- toYaml .Values.m | nindent 2 }}\n", {"m": {"b": 1, "a": [1]}}, "k:\n  a:\n  - 1\n  b: 1\n"),
    ("{{ .Values.t | default \"d\" | quote }}", {"t": ""}, '"d"'),
    ("x{{/* gone */}}y {{- /* gone */ -}} z", {}, "xyz"),
    ("{{- with .Values.m }}{{ .a }}{{ end }}", {"m": {"a": "v"}}, "v"),
    ("{{ if not .Values.b }}off{{ end }}", {"b": False}, "off"),
])
def test_renderer_matches_go_templates(src, values, want):
    assert gen_deploy.render_template(src, {"Values": values}) == want


@pytest.mark.parametrize("src", ["{{ .Values.missing }}", "{{ range .Values.l }}{{ end }}", "{{ include \"x\" . }}",
                                 "{{ .Values.m }}", "{{ if .Values.b }}", "{{ lower .Values.s }}"])
def test_renderer_refuses_what_it_does_not_do(src):
    with pytest.raises(gen_deploy.TemplateError):
        gen_deploy.render_template(src, {"Values": {"l": [1], "m": {"a": 1}, "b": True, "s": "S"}})


def test_validation_rejects_unknown_fields():
    """The checks above would pass anything if validation were lax."""
    ds = daemonset()
    agent_container(ds)["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(ds)
    (sm,) = docs_of((MANIFESTS / "servicemonitor.yaml").read_text())
    sm["spec"]["endpoints"][0]["scrapeTimout"] = "10s"
    with pytest.raises(AssertionError, match="scrapeTimout"):
        validate(sm)


def test_project_quota_reading_adds_cap_sys_admin_to_the_agent_only_when_asked():
    """Opt-in (values ephemeralStorage.projectQuotas): quotactl on another project needs
    CAP_SYS_ADMIN. Off by default; on, only the agent container gets it, nothing else."""
    def caps(values):
        ds = by_kind(rendered_docs(values), "DaemonSet")[0]
        return {c["name"]: c["securityContext"]["capabilities"] for c in ds["spec"]["template"]["spec"]["containers"]}
    assert all(c == {"drop": ["ALL"]} for c in caps(None).values())
    on = caps({"ephemeralStorage": {"projectQuotas": True}, "kubeRbacProxy": {"enabled": True}})
    agent = agent_container(by_kind(rendered_docs({"ephemeralStorage": {"projectQuotas": True}}), "DaemonSet")[0])
    assert on[agent["name"]] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    assert all(c == {"drop": ["ALL"]} for name, c in on.items() if name != agent["name"])
