"""The floor's bare work of one scrape, shared by bench.py's floor and parse_floor.py's floors so
that both measure the same thing: the two CRI list calls, and every file the scrape reads read once
(open, read, close; one gone meanwhile skipped), nothing parsed or kept. One call per scrape and no
per-file call, so the helper adds nothing measurable to the floor."""
from __future__ import annotations

import os
from collections.abc import Sequence

from cri_exporter.cri import CriClient


def bare_read(client: CriClient, paths: Sequence[str]) -> None:
    client.list_pod_sandboxes()
    client.list_containers()
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        os.read(fd, 65536)
        os.close(fd)
