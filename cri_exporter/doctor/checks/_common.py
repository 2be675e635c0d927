"""Helpers the area modules share for writing fixes (never for reading facts:
those are in doctor/facts/ and on the Context)."""
from __future__ import annotations


def toml_snippet(table: str, *lines: str) -> str:
    return "\n".join([f"[{table}]"] + [f"  {line}" for line in lines])
