"""python -m alerts [--check]: regenerate the rule file and the PrometheusRule (or verify them)."""
from __future__ import annotations

import argparse
import sys

from alerts import DIR, generate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file differs")
    args = parser.parse_args()
    stale = []
    for name, text in generate().items():
        path = DIR / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text)
    for name in stale:
        print(f"{'stale' if args.check else 'wrote'} alerts/{name}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
