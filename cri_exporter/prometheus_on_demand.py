"""Packages whose `__init__` `serve` does not need, put in sys.modules as empty shells.

prometheus_client: 2.5 MB of resident memory. The agent uses its metric families,
registry, metrics, collectors, samples and OpenMetrics escaping, each a submodule;
its own server and writer answer /metrics. The package's `__init__` imports all of
them and its exposition module too, which brings http.server, socketserver,
urllib.request, wsgiref and email's parser: 2.66 MB of RSS against 0.16 MB for the
submodules alone, measured after the rest of `serve`'s imports (asyncio, grpc,
click, structlog, email.utils).

grpc.aio: 0.5 MB (grpc's asyncio API: 9 modules of classes; 6 December, measured
after the rest of `serve`'s imports). grpc's `__init__` imports it for every
process; the agent's CRI client is grpc's synchronous one.

`install()` (cli.py, `serve` only, before anything imports either) puts each
package in sys.modules as an empty shell with the package's path, so
`import prometheus_client.metrics` runs that submodule alone. Any other name asked
of the package itself (`prometheus_client.generate_latest`, `grpc.aio.insecure_channel`)
runs the package's `__init__` into the shell then, so nothing that uses it breaks,
at the memory cost saved.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
import types

from cri_exporter.ssl_on_demand import is_the_command

PACKAGE = "prometheus_client"
GRPC_AIO = "grpc.aio"
PACKAGES = (PACKAGE, GRPC_AIO)
_LOCK = threading.RLock()


class _Shell(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__") or name == "_loaded":
            raise AttributeError(name)
        if importlib.util.find_spec(f"{self.__name__}.{name}") is not None:
            raise AttributeError(name)  # a submodule not imported yet: `from prometheus_client import x` imports it
        return getattr(load(self.__name__), name)


def load(package: str = PACKAGE) -> types.ModuleType:
    """The whole package: its `__init__` run into the shell (once)."""
    with _LOCK:
        module = sys.modules.get(package)
        if module is None:
            return importlib.import_module(package)
        if isinstance(module, _Shell) and not vars(module).get("_loaded"):
            vars(module)["_loaded"] = True
            module.__spec__.loader.exec_module(module)  # type: ignore[union-attr]
        return module


def loaded(package: str = PACKAGE) -> bool:
    """Whether the package's `__init__` (prometheus_client's: its exposition module) ran."""
    module = sys.modules.get(package)
    return module is not None and (not isinstance(module, _Shell) or bool(vars(module).get("_loaded")))


def _spec(package: str) -> importlib.machinery.ModuleSpec | None:
    """The package's spec without importing its parent (grpc's `__init__` would import grpc.aio)."""
    parent, _, _ = package.rpartition(".")
    if not parent:
        return importlib.util.find_spec(package)
    if parent in sys.modules:
        return None  # the parent ran its `__init__` already: too late
    parent_spec = importlib.util.find_spec(parent)
    if parent_spec is None or parent_spec.submodule_search_locations is None:
        return None
    return importlib.machinery.PathFinder.find_spec(package, list(parent_spec.submodule_search_locations))


def install(argv: list[str] | None = None, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """The shells in place for `serve`, before anything imports the packages; the packages it put."""
    if not is_the_command(sys.argv if argv is None else argv, "serve"):
        return []
    put = []
    for package in packages:
        if package in sys.modules:
            continue
        spec = _spec(package)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            continue
        shell = _Shell(package)
        shell.__spec__, shell.__loader__, shell.__file__ = spec, spec.loader, spec.origin
        shell.__path__ = list(spec.submodule_search_locations)
        shell.__package__ = package
        sys.modules[package] = shell
        put.append(package)
    return put
