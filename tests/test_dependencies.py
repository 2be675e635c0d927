"""pyproject.toml's [project].dependencies are what the agent imports, no more and no less.

A declared dependency the package never imports is installed on every node (the image, the
VM guest's wheels) for nothing; an import of an undeclared one works in the test venv, where
the test extra brought it, and fails in the image. Checked twice: statically, every import
statement of every module (those inside functions too, such as the doctor's pyroute2), and by
importing every module in a child whose imports of anything outside the declared
dependencies (and what they require in turn) fail as if it were not installed.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "cri_exporter"


def _norm(name: str) -> str:
    """A distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return {_norm(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0]) for d in deps}


def imported_top_levels() -> dict[str, set[str]]:
    """Top-level module names the package imports from outside itself and the stdlib -> the files."""
    out: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "cri_exporter" and top not in sys.stdlib_module_names:
                    out.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return out


def test_every_import_is_declared_and_every_declaration_imported():
    providers = metadata.packages_distributions()
    wanted = declared()
    used: set[str] = set()
    for top, files in sorted(imported_top_levels().items()):
        dists = {_norm(d) for d in providers.get(top, [])}
        assert dists & wanted, f"{top} (imported by {sorted(files)}) comes from {sorted(dists) or 'nothing installed'}, " \
                               f"not from a declared dependency {sorted(wanted)}"
        used |= dists & wanted
    assert used == wanted, f"declared but never imported by cri_exporter: {sorted(wanted - used)} " \
                           "(a test-only library belongs in the test extra)"


# The child: a finder first on sys.meta_path refuses every top-level module that is neither the
# stdlib's, nor cri_exporter, nor a declared dependency's or one of theirs (as installed). A
# library's optional import (structlog's rich, say) then fails as it does where only the declared
# dependencies are installed.
_CHILD = textwrap.dedent("""
    import sys
    preloaded = set(sys.modules)  # the interpreter's start (site, .pth files): before the checker's own imports
    import importlib, importlib.abc, pkgutil, re
    from importlib import metadata
    from packaging.requirements import Requirement

    def norm(n):
        return re.sub(r"[-_.]+", "-", n).lower()

    closure, todo = set(), [norm(d) for d in sys.argv[1:]]
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        for r in metadata.requires(name) or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(norm(req.name))
    allowed = {top for top, dists in metadata.packages_distributions().items()
               if any(norm(d) in closure for d in dists)}

    class Undeclared(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            top = fullname.split(".")[0]
            if top in sys.stdlib_module_names or top == "cri_exporter" or top in allowed or top in preloaded:
                return None
            raise ModuleNotFoundError(f"No module named {fullname!r} (not a declared dependency)", name=fullname)

    sys.meta_path.insert(0, Undeclared())
    import cri_exporter
    for mod in pkgutil.walk_packages(cri_exporter.__path__, "cri_exporter."):
        if not mod.name.endswith(".__main__"):  # it runs the CLI
            importlib.import_module(mod.name)
            print(mod.name)
""")


def test_every_module_imports_with_only_the_declared_dependencies():
    proc = subprocess.run([sys.executable, "-c", _CHILD, *sorted(declared())], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Every module of the tree was reached (walk_packages skips a directory without __init__.py).
    files = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
             for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"}
    assert set(proc.stdout.split()) == files - {"cri_exporter"}, set(proc.stdout.split()) ^ files
