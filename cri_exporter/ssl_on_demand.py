"""OpenSSL mapped only when `serve` may serve TLS: 4.5 MB of resident memory.

`serve` without a web config never speaks TLS (the web config is the only way
to turn it on, and turning it on or off needs a restart: webconfig.py refuses
such a reload), yet importing asyncio, http.client and prometheus_client
imports `ssl`, and urllib.request imports `hashlib`, whose `_hashlib` is
OpenSSL's too: libcrypto, libssl, _ssl and their start-up heap, 4.5 MB of
RSS (measured: the agent's modules imported, 41.7 -> 37.2 MB; `ssl` alone is
1.1 MB of it, libcrypto stays mapped through `_hashlib`).

`install()` (cli.py, before anything imports asyncio) puts a stand-in module
under the name `ssl` and keeps `_hashlib` out, so hashlib and hmac use
CPython's own digests (sha*, md5, blake2, compare_digest; the agent hashes
only with blake2b, webauth.py). The stand-in answers the few names the
imports above read at import time (annotations, default arguments, the
tuple of errors asyncio's TLS protocol retries on) with inert placeholders;
any other name loads the real `ssl` and the stand-in becomes it, so code
that does use TLS anyway (a client of some HTTPS URL) still works, at the
memory cost this module saves.
"""
from __future__ import annotations

import importlib
import os
import sys
import types

WEB_CONFIG_FLAGS = ("--web-config-file", "--web.config.file")
WEB_CONFIG_ENV = "CRI_EXPORTER_WEB_CONFIG_FILE"
# Read while those modules are imported (prometheus_client.exposition's annotations and
# default arguments, asyncio.sslproto's errors), or by asyncio's create_server (isinstance
# of SSLSocket), before anything could want TLS. No instance of an ssl class can exist
# before ssl is loaded, so a placeholder class answers isinstance and except truly;
# building one loads ssl and builds the real class.
IMPORT_TIME_NAMES = ("SSLContext", "TLSVersion", "PROTOCOL_TLS_CLIENT", "PROTOCOL_TLS_SERVER",
                     "SSLWantReadError", "SSLSyscallError", "SSLSocket")


def is_the_command(argv: list[str], command: str) -> bool:
    """Whether this process is `cri-exporter <command>` itself (the console
    script, `python -m cri_exporter`), never a process that imports the CLI
    (a test runner asked for `-k serve`)."""
    if not argv or not (argv[0].endswith("/cri-exporter") or argv[0] == "cri-exporter"
                        or argv[0].endswith("cri_exporter/__main__.py")):
        return False
    return next((a for a in argv[1:] if not a.startswith("-")), None) == command


def serve_without_web_config(argv: list[str], environ) -> bool:
    """True for `serve` started with no web config (no flag, no environment
    variable; click ignores an empty one): a process that cannot serve TLS."""
    if not is_the_command(argv, "serve") or environ.get(WEB_CONFIG_ENV):
        return False
    return not any(a == flag or a.startswith(flag + "=") for a in argv[1:] for flag in WEB_CONFIG_FLAGS)


class _Builds(type):
    def __call__(cls, *args, **kwargs):
        """The real class, built with any placeholder argument (a PROTOCOL_* read
        before ssl was loaded, as prometheus_client's default arguments are) made real."""
        real = load()

        def arg(a):
            return getattr(real, a.__name__) if isinstance(a, _Builds) else a

        return getattr(real, cls.__name__)(*map(arg, args), **{k: arg(v) for k, v in kwargs.items()})


class _Placeholder(Exception, metaclass=_Builds):
    """Stands for an ssl class or constant read before ssl is loaded; never raised,
    never an instance (building one builds the real class)."""


class _OnDemand(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("ssl", "stand-in for ssl until something uses TLS (cri_exporter.ssl_on_demand)")
        self._placeholders = {n: type(n, (_Placeholder,), {"__module__": __name__}) for n in IMPORT_TIME_NAMES}

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "_placeholders":
            raise AttributeError(name)
        if name in self._placeholders:
            return self._placeholders[name]
        real = load()
        return getattr(real, name)


def load() -> types.ModuleType:
    """The real ssl module; the stand-in, which modules imported as `ssl`, takes its names."""
    stand_in = sys.modules.get("ssl")
    if not isinstance(stand_in, _OnDemand):
        return importlib.import_module("ssl")
    del sys.modules["ssl"]
    real = importlib.import_module("ssl")
    vars(stand_in).update({k: v for k, v in vars(real).items() if k not in ("__name__", "__doc__", "__spec__",
                                                                            "__loader__")})
    return real


def loaded() -> bool:
    """Whether OpenSSL's ssl module is in this process."""
    return "ssl" in sys.modules and not isinstance(sys.modules["ssl"], _OnDemand)


def install(argv: list[str] | None = None, environ=None) -> bool:
    """Put the stand-in in place for `serve` without a web config, before
    asyncio, prometheus_client or hashlib are imported; True if it did."""
    if "ssl" in sys.modules or "_hashlib" in sys.modules:
        return False  # too late: something imported them already (a test's process)
    if not serve_without_web_config(sys.argv if argv is None else argv, os.environ if environ is None else environ):
        return False
    sys.modules["_hashlib"] = None  # type: ignore[assignment]  # hashlib and hmac fall back to CPython's own
    sys.modules["ssl"] = _OnDemand()
    return True
