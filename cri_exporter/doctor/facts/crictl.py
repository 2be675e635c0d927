"""crictl's config file (crictl.yaml), read as crictl reads it (YAML)."""
from __future__ import annotations

import yaml

from cri_exporter.doctor.facts.files import FileTooLarge, read_config
from cri_exporter.hostfs import HostFS


def read(hostfs: HostFS, path: str) -> tuple[object, str]:
    """(the parsed file, "") or (None, why it could not be read)."""
    try:
        return yaml.safe_load(read_config(hostfs, path)) or {}, ""
    except (yaml.YAMLError, OSError, FileTooLarge) as e:
        return None, str(e)
