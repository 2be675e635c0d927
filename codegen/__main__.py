"""python -m codegen [--check] [target ...]: regenerate (or verify) every generated file."""
from __future__ import annotations

import argparse
import sys

from codegen import TARGETS, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codegen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a committed file is stale")
    names = [t.name for t in TARGETS]
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help=f"only these, of {', '.join(names)} (default: all, in that order)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.targets) - set(names))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(names)}")
    return run(args.check, tuple(args.targets))


sys.exit(main())
