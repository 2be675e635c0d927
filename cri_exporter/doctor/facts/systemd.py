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


def environment(hostfs: HostFS, unit: Unit) -> dict[str, str]:
    """Environment= and EnvironmentFile= variables, in the order systemd applies them."""
    env: dict[str, str] = {}
    for value in unit.lists.get("EnvironmentFile", []):
        path = value.lstrip("-")
        try:
            text = read_config(hostfs, path)
        except (OSError, FileTooLarge):
            continue
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith(("#", ";")) and "=" in line:
                k, _, v = line.partition("=")
                try:
                    words = shlex.split(v)
                except ValueError:
                    words = [v]
                env[k.strip().removeprefix("export ").strip()] = " ".join(words)
    for value in unit.lists.get("Environment", []):
        try:
            words = shlex.split(value)
        except ValueError:
            continue
        for w in words:
            k, eq, v = w.partition("=")
            if eq:
                env[k] = v
    return env


def exec_start(hostfs: HostFS, unit: Unit) -> list[str] | None:
    """The service's command as argv, variables expanded as systemd does
    (`${VAR}` is one word, a bare `$VAR` splits on whitespace); None when
    the unit has no ExecStart."""
    commands = unit.lists.get("ExecStart") or []
    if not commands:
        return None
    env = environment(hostfs, unit)
    try:
        words = shlex.split(commands[-1])
    except ValueError:
        return None
    argv: list[str] = []
    for w in words:
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", w)
        if whole:
            argv += env.get(whole.group(1), "").split()
            continue
        argv.append(_VAR_RE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), w))
    if argv:
        argv[0] = argv[0].lstrip("-@+!:")  # ExecStart prefixes: ignore-failure, argv0, privileges
    return argv
