"""docs/doctor.md lists every check with the versions it knows and its upstream reference."""
import re
from pathlib import Path

from cri_exporter.doctor import registry
import cri_exporter.doctor.checks  # noqa: F401 -- registers the checks

DOC = Path(__file__).parent.parent / "docs" / "doctor.md"


def test_every_check_has_its_versions_and_an_upstream_reference():
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\| `([a-z0-9_.]+)` \| (critical|warning|info) \|", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in line.strip().strip("|").split(" | ")]
    ids = list(registry.all_checks())
    assert ids and not [i for i in ids if i not in rows], "checks missing from docs/doctor.md"
    assert not [r for r in rows if r not in ids], "docs/doctor.md lists checks that do not exist"
    for i in ids:
        _, severity, what, versions, refs = rows[i]
        assert severity == registry.all_checks()[i].severity.value, i
        assert what and versions, i
        assert re.search(r"\]\(https?://", refs), f"{i}: no upstream link"
