"""ReadingRows (the fd sampler's latest readings): a row read again keeps its
place, rows of keys dropped go and the rest keep their numbers, a copy does not
follow later puts."""
import math

import pytest

from cri_exporter.reading_rows import NAN, ReadingRows


def test_put_replace_keep_copy():
    rows = ReadingRows(3)
    rows.put("a", (1, 2, 3))
    rows.put("b", (4, NAN, 6))
    rows.put("c", (7, 8, 9))
    rows.put("a", (10, 11, 12))  # read again: same row
    assert len(rows) == 3 and list(rows.row("a")) == [10, 11, 12]
    assert rows.at("b", 0) == 4 and math.isnan(rows.at("b", 1)) and rows.at("zz", 0) is None
    snap = rows.copy()
    rows.keep({"a", "c"})
    assert "b" not in rows and len(rows) == 2 and len(rows.values) == 6
    assert list(rows.row("a")) == [10, 11, 12] and list(rows.row("c")) == [7, 8, 9]
    rows.put("a", (0, 0, 0))
    assert list(snap.row("a")) == [10, 11, 12] and snap.at("b", 2) == 6
    with pytest.raises(ValueError):
        rows.put("d", (1, 2))
