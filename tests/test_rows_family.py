"""exposition.RowsFamily: label values made from the scrape's objects when written give
the same lines and samples as the same values added as label sets."""
from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from cri_exporter.exposition import SLICE_SERIES, ExpositionWriter, Family, RowsFamily

NAMES = ("namespace", "pod", "image", "attempt")
ROWS = [(("shop", f"web-{i}"), {"image": f'reg/app:"v{i}"\\n', "attempt": i}) for i in range(4200)]  # over SLICE_SERIES: the writer slices it


def _values(ident, item):
    return (*ident, item["image"], str(item["attempt"]))


def _both():
    rows = RowsFamily("cri_x_info", "Rows.", NAMES, _values)
    plain = Family("cri_x_info", "Rows.", NAMES)
    for ident, item in ROWS:
        rows.add_row(ident, item, 1.0)
        plain.add_metric(_values(ident, item), 1.0)
    return rows, plain


def test_rows_family_writes_what_label_sets_write():
    rows, plain = _both()
    assert rows.text("cri_x_info") == plain.text("cri_x_info")
    assert rows.text("cri_x_info", 10, 20) == plain.text("cri_x_info", 10, 20)
    assert len(rows.values) > SLICE_SERIES
    assert rows.samples == plain.samples
    # the writer slices a family of more than SLICE_SERIES series; generate_latest reads samples
    assert ExpositionWriter().write([rows]) == ExpositionWriter().write([plain])

    class One:
        def collect(self):
            return [rows]
    registry = CollectorRegistry()
    registry.register(One())
    assert generate_latest(registry) == ExpositionWriter().write([plain])


def test_rows_family_series_are_added_by_their_objects():
    rows, _ = _both()
    with pytest.raises(TypeError):
        rows.add_metric(("a", "b", "c", "d"), 1.0)
