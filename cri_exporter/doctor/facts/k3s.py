"""The kubelet k3s runs inside its own process, read the way k3s configures it.

k3s releases with a kubelet drop-in directory (pkg/daemons/agent:
kubeletArgsAndConfig, startKubelet, extractConfigArgs, writeKubeletConfig)
start the embedded kubelet with:
- `--config-dir=<data-dir>/agent/etc/kubelet.conf.d`, where k3s writes its
  KubeletConfiguration as `00-k3s-defaults.conf` at every start, and no
  `--config`; a `config=` or `config-dir=` kubelet-arg is not passed on but
  copied into that directory (`10-cli-config.conf`, `20-cli-config-dir/`);
- `--kubeconfig=<data-dir>/agent/kubelet.kubeconfig` and `--read-only-port=0`
  among its own arguments, then every `kubelet-arg` (`name=value`, leading
  dashes optional), which override k3s's own of the same name.

`kubelet-arg` comes from /etc/rancher/k3s/config.yaml, then the files in
/etc/rancher/k3s/config.yaml.d/*.yaml in name order (a later file replaces a
key, `kubelet-arg+` appends: pkg/configfilearg), then `--kubelet-arg` on the
command line of the k3s.service or k3s-agent.service unit.

Older k3s passed the whole kubelet configuration as flags built in memory: no
file holds them, and the doctor says so instead of guessing. The kubelet's
version is compiled into the k3s binary and recorded in no package database:
it stays unknown (the checks that depend on it judge conservatively).
"""
from __future__ import annotations

import yaml

from cri_exporter.doctor.facts import systemd
from cri_exporter.doctor.facts.files import FileTooLarge, list_dir, read_config
from cri_exporter.hostfs import HostFS

DATA_DIR = "/var/lib/rancher/k3s"
CONFIG = "/etc/rancher/k3s/config.yaml"
UNITS = ("k3s.service", "k3s-agent.service")
DEFAULTS_FILE = "00-k3s-defaults.conf"
# kubelet-arg names k3s takes out of the arguments and copies into its drop-in directory.
_COPIED = ("config", "config-dir")


def dropin_dir(data_dir: str) -> str:
    return f"{data_dir}/agent/etc/kubelet.conf.d"


def _config_files(hostfs: HostFS) -> list[str]:
    d = CONFIG + ".d"
    return [CONFIG] + [f"{d}/{n}" for n in list_dir(hostfs, d) if n.endswith((".yaml", ".yml"))]


def _values(v) -> list[str]:
    if isinstance(v, list):
        return [str(x) for x in v if x is not None]
    return [] if v is None else [str(v)]


def config_keys(hostfs: HostFS) -> tuple[dict[str, tuple[list[str], str]], list[str]]:
    """key -> (values, file that set them last), and the files read."""
    keys: dict[str, tuple[list[str], str]] = {}
    read = []
    for path in _config_files(hostfs):
        try:
            data = yaml.safe_load(read_config(hostfs, path))
        except (OSError, FileTooLarge, yaml.YAMLError):
            continue
        read.append(path)
        for key, value in (data or {}).items() if isinstance(data, dict) else ():
            key = str(key)
            if key.endswith("+"):
                key = key[:-1]
                old = keys.get(key, ([], path))[0]
                keys[key] = (old + _values(value), path)
            else:
                keys[key] = (_values(value), path)
    return keys, read


def _from_unit(hostfs: HostFS, unit: systemd.Unit) -> dict[str, list[str]]:
    """--kubelet-arg and --data-dir values on the unit's ExecStart (urfave/cli
    reads `--name value`, `--name=value`, `-d`)."""
    argv = systemd.exec_start(hostfs, unit) or []
    out: dict[str, list[str]] = {}
    i = 1
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if name in ("--kubelet-arg", "--data-dir", "-d"):
            if not eq and i + 1 < len(argv):
                i += 1
                value = argv[i]
            out.setdefault("data-dir" if name != "--kubelet-arg" else "kubelet-arg", []).append(value)
        i += 1
    return out


def kubelet_command_line(hostfs: HostFS) -> tuple[list[tuple[str, str]], str, list[str]] | None:
    """(the kubelet's arguments as (word, origin) pairs, where they were read,
    the files read) for a k3s node whose k3s writes the kubelet drop-in
    directory; None on other nodes and older k3s."""
    keys, files = config_keys(hostfs)
    unit = next((u for u in (systemd.read_unit(hostfs, n) for n in UNITS) if u.exists), None)
    cli = _from_unit(hostfs, unit) if unit else {}
    data_dir = (cli.get("data-dir") or keys.get("data-dir", ([DATA_DIR], ""))[0] or [DATA_DIR])[-1]
    directory = dropin_dir(data_dir)
    if not hostfs.is_file(f"{directory}/{DEFAULTS_FILE}"):
        return None
    own = "k3s's own kubelet arguments (pkg/daemons/agent)"
    args = [(f"--config-dir={directory}", own), (f"--kubeconfig={data_dir}/agent/kubelet.kubeconfig", own),
            ("--read-only-port=0", own)]
    extra = [(v, keys["kubelet-arg"][1]) for v in keys.get("kubelet-arg", ([], ""))[0]]
    where = unit.where.get("ExecStart", "") if unit else ""
    extra += [(v, where) for v in cli.get("kubelet-arg", [])]
    for value, origin in extra:
        word = "--" + value.lstrip("-")
        if word[2:].partition("=")[0] not in _COPIED:
            args.append((word, f"kubelet-arg in {origin}"))
    sources = ", ".join(x for x in ([f"kubelet-arg in {', '.join(files)}"] if files else [])
                        + ([f"ExecStart of {where}"] if where else []))
    how = f"k3s runs the kubelet in its own process ({data_dir}): k3s's own arguments" + (
        f", {sources}" if sources else "") + f", drop-ins in {directory}"
    return args, how, files + ([unit.files[0]] if unit else [])

