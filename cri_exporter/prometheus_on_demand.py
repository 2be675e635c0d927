"""prometheus_client's submodules without its package `__init__` in `serve`: 2.5 MB of resident memory.

The agent uses prometheus_client's metric families, registry, metrics, collectors,
samples and OpenMetrics escaping, each a submodule; its own server and writer
answer /metrics. The package's `__init__` imports all of them and its exposition
module too, which brings http.server, socketserver, urllib.request, wsgiref and
email's parser: 2.66 MB of RSS against 0.16 MB for the submodules alone, measured
after the rest of `serve`'s imports (asyncio, grpc, click, structlog, email.utils).

`install()` (cli.py, `serve` only, before anything imports prometheus_client)
puts the package in sys.modules as an empty shell with the package's path, so
`import prometheus_client.metrics` runs that submodule alone. Any other name asked
of the package itself (`prometheus_client.generate_latest`) runs the package's
`__init__` into the shell then, so nothing that uses it breaks, at the memory cost
saved.
"""
from __future__ import annotations

import importlib.util
import sys
import types

from cri_exporter.ssl_on_demand import is_the_command

PACKAGE = "prometheus_client"


class _Shell(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__") or name == "_loaded":
            raise AttributeError(name)
        if importlib.util.find_spec(f"{PACKAGE}.{name}") is not None:
            raise AttributeError(name)  # a submodule not imported yet: `from prometheus_client import x` imports it
        return getattr(load(), name)


def load() -> types.ModuleType:
    """The whole package: its `__init__` run into the shell (once)."""
    module = sys.modules.get(PACKAGE)
    if module is None:
        return importlib.import_module(PACKAGE)
    if isinstance(module, _Shell) and not vars(module).get("_loaded"):
        vars(module)["_loaded"] = True
        module.__spec__.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def loaded() -> bool:
    """Whether the package's `__init__` (and with it its exposition module) ran."""
    module = sys.modules.get(PACKAGE)
    return module is not None and (not isinstance(module, _Shell) or bool(vars(module).get("_loaded")))


def install(argv: list[str] | None = None) -> bool:
    """The shell in place for `serve`, before anything imports prometheus_client; True if it did."""
    if PACKAGE in sys.modules or not is_the_command(sys.argv if argv is None else argv, "serve"):
        return False
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return False
    shell = _Shell(PACKAGE)
    shell.__spec__, shell.__loader__, shell.__file__ = spec, spec.loader, spec.origin
    shell.__path__ = list(spec.submodule_search_locations)
    shell.__package__ = PACKAGE
    sys.modules[PACKAGE] = shell
    return True
