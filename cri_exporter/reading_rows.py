"""A background reader's latest reading of each target as rows of doubles in
one C array, found by key through one dict: not an object per target with its
own ints and floats (some 100-130 bytes a target less, and no small objects
made by each pass among the scrapes'). None is NaN; readers check `x == x`."""
from __future__ import annotations

from array import array
from typing import Container, Iterable

NAN = float("nan")


class ReadingRows:
    """`width` numbers a key; a row keeps its place when read again."""

    __slots__ = ("width", "index", "values")

    def __init__(self, width: int, index: dict[str, int] | None = None, values: array | None = None):
        self.width = width
        self.index: dict[str, int] = {} if index is None else index  # key -> row
        self.values = array("d") if values is None else values  # row i at [i * width, (i + 1) * width)

    def put(self, key: str, row: Iterable[float]) -> None:
        w = self.width
        numbers = array("d", row)
        if len(numbers) != w:
            raise ValueError(f"a row of {w} numbers, not {len(numbers)}")
        i = self.index.get(key)
        if i is None:
            self.index[key] = len(self.values) // w
            self.values.extend(numbers)
        else:
            self.values[i * w:(i + 1) * w] = numbers

    def row(self, key: str) -> array | None:
        i = self.index.get(key)
        if i is None:
            return None
        w = self.width
        return self.values[i * w:(i + 1) * w]

    def at(self, key: str, column: int) -> float | None:
        """One number of `key`'s row; None when there is no row."""
        i = self.index.get(key)
        return None if i is None else self.values[i * self.width + column]

    def keep(self, keys: Container[str]) -> None:
        """Drop the rows of keys not in `keys` (the rest packed anew)."""
        if all(k in keys for k in self.index):
            return
        w, old = self.width, self.values
        index: dict[str, int] = {}
        values = array("d")
        for k, i in self.index.items():
            if k in keys:
                index[k] = len(index)
                values.extend(old[i * w:(i + 1) * w])
        self.index, self.values = index, values

    def copy(self) -> ReadingRows:
        return ReadingRows(self.width, dict(self.index), array("d", self.values))

    def __contains__(self, key: object) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.index)
