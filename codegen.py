"""Write generated files, or with --check only say which are stale.

dashboards/ and alerts/ keep their generated JSON and YAML committed beside
the Python that makes them; both regenerate (or verify) through here.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable


def main(description: str, directory: Path, generate: Callable[[], dict[str, str]]) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file differs")
    args = parser.parse_args()
    stale = []
    for name, text in generate().items():
        path = directory / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text)
    for name in stale:
        print(f"{'stale' if args.check else 'wrote'} {directory.name}/{name}")
    return 1 if (args.check and stale) else 0
