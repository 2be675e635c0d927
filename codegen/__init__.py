"""Every generated file of the repository, made (or verified) by one command.

    .venv/bin/python -m codegen           # write what is stale
    .venv/bin/python -m codegen --check   # exit 1 naming each stale file (CI)

Targets run in dependency order: the protobuf code from cri_exporter/cri/api.proto
(codegen/proto.py: all of it for the tests, and the agent's read-only cut, which
follows the calls and fields of cri_exporter/cri/client.py), the Grafana dashboards (dashboards/), the alert rules
(alerts/), and the deploy manifests (codegen/deploy.py), which embed the alert
rules and so come after them. Generated files are committed so installing
the agent needs no generator; tests fail when one drifts from its source.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """A set of generated files: `generate()` gives {path: text}; `obsolete(generated)`
    the files in its directories that it no longer makes."""

    name: str
    generate: Callable[[], dict[Path, str]]
    obsolete: Callable[[dict[Path, str]], list[Path]] = field(default=lambda generated: [])


def _proto() -> dict[Path, str]:
    from codegen import proto
    return proto.generated_files()


def _beside(package: str) -> Callable[[], dict[Path, str]]:
    """A package (dashboards, alerts) whose generate() gives {file name: text} in its own DIR."""
    def generate() -> dict[Path, str]:
        import importlib
        module = importlib.import_module(package)
        return {module.DIR / name: text for name, text in module.generate().items()}
    return generate


def _deploy() -> dict[Path, str]:
    from codegen import deploy
    return deploy.generate()


def _deploy_obsolete(generated: dict[Path, str]) -> list[Path]:
    from codegen import deploy
    return [p for p in deploy.stale(generated) if p not in generated]


TARGETS: tuple[Target, ...] = (
    Target("proto", _proto),
    Target("dashboards", _beside("dashboards")),
    Target("alerts", _beside("alerts")),
    Target("deploy", _deploy, _deploy_obsolete),
)


def stale(target: Target) -> tuple[dict[Path, str], list[Path], list[Path]]:
    """(generated, files that differ from it, files no longer generated)."""
    generated = target.generate()
    differ = [p for p, text in generated.items() if not p.exists() or p.read_text() != text]
    return generated, differ, target.obsolete(generated)


def run(check: bool, names: tuple[str, ...] = (), out=print) -> int:
    """Write (or with `check` only name) the stale files of the targets named
    (all if none), in dependency order: a target is generated after the ones
    before it were written, so the deploy manifests see the current rules."""
    failed = False
    for target in TARGETS:
        if names and target.name not in names:
            continue
        generated, differ, obsolete = stale(target)
        for path in differ:
            rel = path.relative_to(REPO)
            if check:
                out(f"stale: {rel} (run .venv/bin/python -m codegen)")
                failed = True
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(generated[path])
                out(f"wrote {rel}")
        for path in obsolete:
            rel = path.relative_to(REPO)
            if check:
                out(f"stale: {rel} is no longer generated (run .venv/bin/python -m codegen)")
                failed = True
            else:
                path.unlink()
                out(f"removed {rel}")
    return 1 if failed else 0
