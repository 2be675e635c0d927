"""crictl's config file (crictl.yaml), read as crictl reads it (YAML)."""
from __future__ import annotations

import yaml

from cri_exporter.doctor.facts.files import FileTooLarge, read_config
from cri_exporter.hostfs import HostFS

# Where crictl gets installed: the cri-tools packages, the release tarball, Flatcar's /opt/bin.
BINARIES = ("/usr/bin/crictl", "/usr/local/bin/crictl", "/usr/sbin/crictl", "/usr/local/sbin/crictl",
            "/opt/bin/crictl")


def read(hostfs: HostFS, path: str) -> tuple[object, str]:
    """(the parsed file, "") or (None, why it could not be read)."""
    try:
        return yaml.safe_load(read_config(hostfs, path)) or {}, ""
    except (yaml.YAMLError, OSError, FileTooLarge) as e:
        return None, str(e)


def binary(hostfs: HostFS) -> str | None:
    """The first of BINARIES the node has, or None."""
    return next((p for p in BINARIES if hostfs.exists(p)), None)
