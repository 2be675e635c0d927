"""A system unit's [Service] settings as systemd assembles them: the unit
file found first on the search path, then its drop-ins.

systemd(1)/systemd.unit(5): units are looked up in /etc/systemd/system,
/run/systemd/system, /usr/local/lib/systemd/system, /usr/lib/systemd/system
(and /lib/systemd/system on distributions without merged /usr); the first
file wins. Drop-ins `<unit>.d/*.conf` from every one of those directories
apply in file-name order, a name in a higher directory hiding the same name
in a lower one. For list settings an empty assignment (`ExecStart=`) resets
what came before: that is how a drop-in replaces a unit's command.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from cri_exporter.doctor.facts.files import FileTooLarge, list_dir, read_config
from cri_exporter.hostfs import HostFS

UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/usr/lib/systemd/system", "/lib/systemd/system")
_LIST_SETTINGS = ("ExecStart", "Environment", "EnvironmentFile")
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class Unit:
    name: str
    files: list[str] = field(default_factory=list)  # the unit file first, then its drop-ins in order
    settings: dict[str, str] = field(default_factory=dict)  # last assignment of each single-valued setting
    lists: dict[str, list[str]] = field(default_factory=dict)  # ExecStart, Environment, EnvironmentFile
    where: dict[str, str] = field(default_factory=dict)  # setting -> file that set it last

    @property
    def exists(self) -> bool:
        return bool(self.files)


def unit_paths(name: str) -> list[str]:
    return [f"{d}/{name}" for d in UNIT_DIRS]


def read_unit(hostfs: HostFS, name: str) -> Unit:
    unit = Unit(name)
    main = next((p for p in unit_paths(name) if hostfs.exists(p)), None)
    if main is None:
        return unit
    dropins: dict[str, str] = {}
    for d in reversed(UNIT_DIRS):  # higher directories last, so their names win
        for n in list_dir(hostfs, f"{d}/{name}.d"):
            if n.endswith(".conf"):
                dropins[n] = f"{d}/{name}.d/{n}"
    for path in [main] + [dropins[n] for n in sorted(dropins)]:
        try:
            text = read_config(hostfs, path)
        except (OSError, FileTooLarge):
            continue
        unit.files.append(path)
        _apply(unit, path, text)
    return unit


def _apply(unit: Unit, path: str, text: str) -> None:
    section = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        while line.endswith("\\") and i + 1 < len(lines):  # continuation lines
            i += 1
            line = line[:-1] + " " + lines[i].strip()
        i += 1
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section != "[Service]" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if key in _LIST_SETTINGS:
            if value:
                unit.lists.setdefault(key, []).append(value)
            else:
                unit.lists[key] = []
        else:
            unit.settings[key] = value
        unit.where[key] = path


def parse_env_file(text: str) -> dict[str, str]:
    """An EnvironmentFile= as systemd reads it (systemd.exec(5), parse_env_file):
    KEY=VALUE lines, `#`/`;` comments, a backslash at the end of a line
    continuing it (kubespray's kubelet.env spreads KUBELET_ARGS over many
    lines that way), values in double quotes (backslash escapes) or single
    quotes taken literally, an unquoted value stripped of surrounding blanks."""
    env: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        while line.rstrip().endswith("\\") and i < len(lines):
            line = line.rstrip()[:-1] + lines[i]
            i += 1
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            continue
        env[key] = _unquote(value.strip())
    return env


def _unquote(value: str) -> str:
    out, quote, i = [], "", 0
    while i < len(value):
        c = value[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"' and i + 1 < len(value):
                i += 1
                out.append(value[i])
            else:
                out.append(c)
        elif c in "\"'":
            quote = c
        elif c == "\\" and i + 1 < len(value):
            i += 1
            out.append(value[i])
        else:
            out.append(c)
        i += 1
    return "".join(out)


def environment_sources(hostfs: HostFS, unit: Unit) -> dict[str, tuple[str, str]]:
    """Variable -> (value, the file that set it): every EnvironmentFile= the
    unit names, in order (a `-` prefix makes a missing file no error), then
    Environment= (which systemd applies after the files)."""
    env: dict[str, tuple[str, str]] = {}
    for value in unit.lists.get("EnvironmentFile", []):
        path = value.lstrip("-").strip()
        try:
            text = read_config(hostfs, path)
        except (OSError, FileTooLarge):
            continue
        for k, v in parse_env_file(text).items():
            env[k] = (v, path)
    for value in unit.lists.get("Environment", []):
        try:
            words = shlex.split(value)
        except ValueError:
            continue
        for w in words:
            k, eq, v = w.partition("=")
            if eq:
                env[k] = (v, unit.where.get("Environment", unit.files[0] if unit.files else ""))
    return env


def environment(hostfs: HostFS, unit: Unit) -> dict[str, str]:
    """Environment= and EnvironmentFile= variables, in the order systemd applies them."""
    return {k: v for k, (v, _) in environment_sources(hostfs, unit).items()}


def exec_start(hostfs: HostFS, unit: Unit) -> list[str] | None:
    """The service's command as argv, variables expanded as systemd does
    (`${VAR}` is one word, a bare `$VAR` splits on whitespace); None when
    the unit has no ExecStart."""
    words = exec_start_sources(hostfs, unit)
    return None if words is None else [w for w, _ in words]


def exec_start_sources(hostfs: HostFS, unit: Unit) -> list[tuple[str, str]] | None:
    """exec_start with, for each word, the file it came from (the env file
    that defined a `$VAR`, else the unit file holding ExecStart=)."""
    commands = unit.lists.get("ExecStart") or []
    if not commands:
        return None
    env = environment_sources(hostfs, unit)
    here = unit.where.get("ExecStart", "")
    try:
        words = shlex.split(commands[-1])
    except ValueError:
        return None
    argv: list[tuple[str, str]] = []
    for w in words:
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", w)
        if whole:
            value, origin = env.get(whole.group(1), ("", here))
            argv += [(part, origin) for part in value.split()]
            continue
        origins = [env[m.group(1) or m.group(2)][1] for m in _VAR_RE.finditer(w) if (m.group(1) or m.group(2)) in env]
        argv.append((_VAR_RE.sub(lambda m: env.get(m.group(1) or m.group(2), ("", ""))[0], w), origins[-1] if origins else here))
    if argv:
        argv[0] = (argv[0][0].lstrip("-@+!:"), argv[0][1])  # ExecStart prefixes: ignore-failure, argv0, privileges
    return argv
