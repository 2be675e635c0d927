"""TOML config files (containerd's, CRI-O's, hosts.toml) parsed into plain
data, or the error with its line and column: a garbled file becomes a
finding, never a traceback."""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass

from cri_exporter.doctor.facts.files import MAX_CONFIG_BYTES, FileTooLarge, read_config
from cri_exporter.hostfs import HostFS

_LINE_RE = re.compile(r"at line (\d+), column (\d+)")


@dataclass(frozen=True)
class ConfigError:
    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.column}" if self.line else self.path
        return f"{where}: {self.message}"


def parse_toml(hostfs: HostFS, host_path: str,
               max_bytes: int = MAX_CONFIG_BYTES) -> tuple[dict, ConfigError | None]:
    """A TOML file's data, and the error with its line and column ({} with it)."""
    try:
        text = read_config(hostfs, host_path, max_bytes)
    except (OSError, FileTooLarge) as e:
        return {}, ConfigError(host_path, str(e) if isinstance(e, FileTooLarge) else e.strerror or str(e))
    return parse_toml_text(host_path, text)


def parse_toml_text(host_path: str, text: str) -> tuple[dict, ConfigError | None]:
    try:
        return tomllib.loads(text), None
    except tomllib.TOMLDecodeError as e:
        m = _LINE_RE.search(str(e))
        line, col = (int(m.group(1)), int(m.group(2))) if m else (None, None)
        return {}, ConfigError(host_path, str(e), line, col)
