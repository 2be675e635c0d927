"""The web configuration file every Prometheus exporter accepts (`--web.config.file`).

node_exporter and every exporter built on github.com/prometheus/exporter-toolkit
read TLS, basic auth, response headers and a rate limit from one YAML file
(its docs/web-configuration.md; names, defaults and checks as in its
web/tls_config.go and web/handler.go). Operators copy that file between
exporters, so this reads the same format with the same meaning, and where
Python's ssl cannot do what a field asks, the file is refused naming the
field rather than served with the field ignored:

- client_auth_type RequestClientCert / RequireAnyClientCert (and the old
  RequireClientCert) accept certificates nobody verified; OpenSSL through
  Python's ssl always verifies a certificate it asked for. The toolkit's own
  docs call every value but RequireAndVerifyClientCert insecure.
- min_version/max_version TLS10, TLS11: OpenSSL 3 (3.0.19 here) has no cipher
  for them at its default security level (RFC 8996 deprecates them).
- curve_preferences of more than one curve: Python's ssl sets one group
  (SSLContext.set_ecdh_curve).
- http_server_config.http2 true: this endpoint speaks HTTP/1.1.
- tls fields without a certificate, and client CAs for a policy that does
  not verify, as the toolkit refuses the latter.

Stricter than the toolkit, on purpose: unknown and duplicate keys are errors
(yaml.v2's UnmarshalStrict does the same), setting both `cert` and `cert_file`
(or `key`/`key_file`, `client_ca`/`client_ca_file`) is an error (the toolkit
quietly takes the file), a client CA that holds no certificate is an error
(the toolkit then refuses every client), and a verifying client_auth_type
needs a client CA (the toolkit falls back to the system's roots, which would
let anyone with a public certificate in).

Errors name the file, the field and what is wrong, never a value: the file
holds password hashes and may hold a private key inline.
"""
from __future__ import annotations

import functools
import ipaddress
import os
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from cri_exporter import confined_read, restart_needed

log = structlog.get_logger(__name__)

# Go's crypto/tls names (tls.CipherSuites(), what the toolkit accepts) -> OpenSSL's.
CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
}
# TLS 1.3's suites are not configurable in Go either: the toolkit accepts their
# names and Go ignores them; so does this.
TLS13_CIPHER_SUITES = frozenset(("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"))
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}
# Names, resolved when a file is read: ssl is a stand-in until then in a `serve` without a web config (ssl_on_demand.py).
TLS_VERSIONS = {"TLS12": "TLSv1_2", "TLS13": "TLSv1_3"}
OLD_TLS_VERSIONS = ("TLS10", "TLS11")
CLIENT_AUTH = {"NoClientCert": "CERT_NONE", "VerifyClientCertIfGiven": "CERT_OPTIONAL",
               "RequireAndVerifyClientCert": "CERT_REQUIRED"}
UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
# The headers the toolkit lets a file set, and the values it accepts (None: any).
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
# $2a$/$2b$/$2x$/$2y$, cost 04-31, 22 characters of salt and 31 of hash (what
# htpasswd -B and Go's bcrypt write, and the `bcrypt` package checks).
BCRYPT_HASH = re.compile(r"\$2[abxy]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")

_SECTIONS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
_TLS_FIELDS = ("cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
               "client_allowed_sans", "min_version", "max_version", "cipher_suites", "prefer_server_cipher_suites",
               "curve_preferences")
_GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class WebConfigError(ValueError):
    """The file cannot be served as written; the message says where and why.
    `denied`: the file whose open was refused (EACCES), for WebConfigFile to
    tell the agent's own confinement from the file's mode."""

    def __init__(self, message: str, denied: str | None = None):
        super().__init__(message)
        self.denied = denied


@dataclass(frozen=True)
class RateLimit:
    """golang.org/x/time/rate's token bucket, as the toolkit builds it: one
    token every `interval` seconds, at most `burst` saved up (0: every request refused)."""

    interval: float
    burst: int


@dataclass(frozen=True, eq=False)
class WebConfig:
    """One good reading of the file, immutable: a connection keeps the one it started with."""

    tls: ssl.SSLContext | None = None
    # Subject alternative names a client certificate must carry one of (None: any).
    client_allowed_sans: frozenset[str] | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # name -> bcrypt hash
    headers: Mapping[str, str] = field(default_factory=dict)
    rate_limit: RateLimit | None = None
    # Every file read to build it (the config itself first): a change to any means a reload.
    files: tuple[str, ...] = ()


def load(path: str) -> WebConfig:
    """Read and check the file at `path`, and everything it names."""
    import yaml  # here: serve without a web config loads no YAML parser

    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise WebConfigError(f"{path}: {_os_reason(err)}", path if isinstance(err, PermissionError) else None) from None
    try:
        doc = yaml.load(text, Loader=_strict_loader())
    except yaml.MarkedYAMLError as err:
        raise WebConfigError(f"{path}: not valid YAML: {_yaml_reason(err)}") from None
    except yaml.YAMLError as err:
        raise WebConfigError(f"{path}: not valid YAML: {type(err).__name__}") from None
    try:
        return _build(doc, Path(path))
    except WebConfigError as err:
        raise WebConfigError(f"{path}: {err}", err.denied) from None


def sans_of(peercert: Mapping[str, Any] | None) -> set[str]:
    """The subject alternative names of a verified peer certificate (as
    ssl.SSLObject.getpeercert() gives them), addresses in one canonical form."""
    names: set[str] = set()
    for kind, value in (peercert or {}).get("subjectAltName", ()):
        if kind in ("DNS", "email", "URI"):
            names.add(value)
        elif kind == "IP Address":
            names.add(_canonical(value.strip()))
    return names


# ---- reading

@functools.cache
def _strict_loader() -> type:
    """yaml.v2's UnmarshalStrict refuses a key given twice; PyYAML keeps the last quietly."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, str):
                    if key in seen:
                        raise yaml.constructor.ConstructorError(None, None, f"key {_name(key)} given twice",
                                                                key_node.start_mark)
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def _yaml_reason(err) -> str:
    """PyYAML's message without its snippet of the file (which could be a hash or a key)."""
    def at(mark) -> str:
        return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""

    problem = f"{err.problem or 'cannot parse'}{at(err.problem_mark)}"
    return f"{err.context}{at(err.context_mark)}: {problem}" if err.context else problem


def _os_reason(err: Exception) -> str:
    if isinstance(err, OSError):
        return err.strerror or type(err).__name__
    return "not UTF-8 text" if isinstance(err, UnicodeDecodeError) else str(err)


def _name(key: object) -> str:
    """A key for a message: quoted, and cut short (a misplaced hash must not land in a log whole)."""
    text = str(key)
    return repr(text if len(text) <= 40 else text[:12] + "...")


def _section(doc: Mapping, name: str, fields: tuple[str, ...] | None) -> dict:
    value = doc.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{name} must be a mapping")
    if fields is not None:
        unknown = [_name(k) for k in value if k not in fields]
        if unknown:
            raise WebConfigError(f"{name}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                                 f"(known: {', '.join(fields)})")
    return value


def _string(section: Mapping, where: str, name: str) -> str:
    value = section.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise WebConfigError(f"{where}.{name} must be a string")
    return value


def _strings(section: Mapping, where: str, name: str) -> list[str] | None:
    value = section.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WebConfigError(f"{where}.{name} must be a list of strings")
    return value


def _build(doc: object, path: Path) -> WebConfig:
    if doc is None:
        doc = {}  # an empty file: plain HTTP, no auth, as with the toolkit
    if not isinstance(doc, dict):
        raise WebConfigError("must be a YAML mapping of tls_server_config, http_server_config, basic_auth_users, rate_limit")
    unknown = [_name(k) for k in doc if k not in _SECTIONS]
    if unknown:
        raise WebConfigError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (known: {', '.join(_SECTIONS)})")
    files = [str(path)]
    tls, sans = _tls(_section(doc, "tls_server_config", _TLS_FIELDS), path.parent, files)
    return WebConfig(tls=tls, client_allowed_sans=sans, users=_users(_section(doc, "basic_auth_users", None)),
                     headers=_headers(_section(doc, "http_server_config", ("http2", "headers"))),
                     rate_limit=_rate_limit(_section(doc, "rate_limit", ("interval", "burst"))), files=tuple(files))


def _users(section: Mapping) -> dict[str, bytes]:
    users = {}
    for name, hashed in section.items():
        if not isinstance(name, str):
            raise WebConfigError(f"basic_auth_users: user names are strings (quote {_name(name)})")
        if not isinstance(hashed, str) or not BCRYPT_HASH.fullmatch(hashed):
            raise WebConfigError(f"basic_auth_users: the password of user {_name(name)} is not a bcrypt hash "
                                 "($2y$ and cost 4-31, as `htpasswd -nBC 10 \"\"` prints)")
        users[name] = hashed.encode()
    return users


def _headers(section: Mapping) -> dict[str, str]:
    http2 = section.get("http2", False)
    if not isinstance(http2, bool):
        raise WebConfigError("http_server_config.http2 must be true or false")
    if http2:
        raise WebConfigError("http_server_config.http2: this endpoint speaks HTTP/1.1 only; remove it or set it false")
    headers = section.get("headers") or {}
    if not isinstance(headers, dict):
        raise WebConfigError("http_server_config.headers must be a mapping")
    out = {}
    for name, value in headers.items():
        if name not in HEADERS:
            raise WebConfigError(f"http_server_config.headers: header {_name(name)} can not be configured "
                                 f"(allowed: {', '.join(HEADERS)})")
        allowed = HEADERS[name]
        if not isinstance(value, str) or (allowed is not None and value not in allowed):
            raise WebConfigError(f"http_server_config.headers: invalid value for {name}"
                                 + (f"; expected one of {', '.join(allowed)}" if allowed else "; expected a string"))
        if value:  # blank: unset, as the toolkit says
            if "\r" in value or "\n" in value:
                raise WebConfigError(f"http_server_config.headers: the value of {name} spans lines")
            out[name] = value
    return out


def _rate_limit(section: Mapping) -> RateLimit | None:
    if not section:
        return None
    interval = _go_duration(section.get("interval", 0))
    burst = section.get("burst", 0)
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
        raise WebConfigError("rate_limit.burst must be a whole number, 0 or more")
    return RateLimit(interval, burst) if interval > 0 else None


def _go_duration(value: object) -> float:
    """Seconds of a Go duration as yaml.v2 reads one: "1s", "1m30s", "250ms", or integer nanoseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value / 1e9
    elif isinstance(value, str) and value.strip() not in ("", "+", "-"):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        parts = _GO_DURATION.findall(body)
        if body == "0":
            return 0.0
        if not parts or "".join(n + u for n, u in parts) != body or any(n in ("", ".") for n, _ in parts):
            raise WebConfigError(f"rate_limit.interval {value!r} is not a duration such as 1s, 500ms or 1m")
        seconds = sign * sum(float(n) * _GO_UNITS[u] for n, u in parts)
    else:
        raise WebConfigError("rate_limit.interval must be a duration such as 1s, 500ms or 1m")
    if seconds < 0:
        raise WebConfigError("rate_limit.interval must not be negative")
    return seconds


def _read(where: str, name: str, path: Path, files: list[str]) -> bytes:
    files.append(str(path))
    try:
        return path.read_bytes()
    except OSError as err:
        raise WebConfigError(f"{where}.{name} {path}: {_os_reason(err)}",
                             str(path) if isinstance(err, PermissionError) else None) from None


def _inline_or_file(section: Mapping, base: Path, files: list[str], inline: str, file: str) -> bytes | None:
    where = "tls_server_config"
    text, path = _string(section, where, inline), _string(section, where, file)
    if text and path:
        raise WebConfigError(f"{where}: set one of {inline} and {file}, not both")
    if path:
        return _read(where, file, base / path, files)
    return text.encode() if text else None


def _tls(section: Mapping, base: Path, files: list[str]) -> tuple[ssl.SSLContext | None, frozenset[str] | None]:
    where = "tls_server_config"
    cert = _inline_or_file(section, base, files, "cert", "cert_file")
    key = _inline_or_file(section, base, files, "key", "key_file")
    client_ca = _inline_or_file(section, base, files, "client_ca", "client_ca_file")
    client_auth = _string(section, where, "client_auth_type")
    if cert is None and key is None and client_ca is None and not client_auth:
        others = [f for f in _TLS_FIELDS if section.get(f) is not None]
        if others:
            raise WebConfigError(f"{where} sets {', '.join(others)} but no certificate: TLS would be off")
        return None, None
    if cert is None:
        raise WebConfigError(f"{where}: missing one of cert or cert_file")
    if key is None:
        raise WebConfigError(f"{where}: missing one of key or key_file")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _version(section, "min_version", "TLS12")
    ctx.maximum_version = _version(section, "max_version", "TLS13")
    if ctx.minimum_version > ctx.maximum_version:
        raise WebConfigError(f"{where}: min_version is above max_version")
    _load_key_pair(ctx, cert, key)
    ctx.set_alpn_protocols(["http/1.1"])

    prefer = section.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise WebConfigError(f"{where}.prefer_server_cipher_suites must be true or false")
    if prefer:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    _ciphers(ctx, _strings(section, where, "cipher_suites"))
    _curves(ctx, _strings(section, where, "curve_preferences"))

    if client_auth in UNVERIFIED_CLIENT_AUTH:
        raise WebConfigError(f"{where}.client_auth_type {client_auth} accepts client certificates nobody verified, "
                             "which Python's ssl cannot do; use RequireAndVerifyClientCert (or VerifyClientCertIfGiven) "
                             "with client_ca_file")
    if client_auth not in ("", *CLIENT_AUTH):
        raise WebConfigError(f"{where}.client_auth_type {client_auth!r} is unknown "
                             f"(known: {', '.join((*CLIENT_AUTH, *UNVERIFIED_CLIENT_AUTH))})")
    ctx.verify_mode = getattr(ssl, CLIENT_AUTH[client_auth or "NoClientCert"])
    if client_ca is not None:
        if ctx.verify_mode == ssl.CERT_NONE:
            raise WebConfigError(f"{where}: client CAs are configured without a client_auth_type that verifies "
                                 "(RequireAndVerifyClientCert or VerifyClientCertIfGiven)")
        try:
            ctx.load_verify_locations(cadata=client_ca.decode("ascii", "replace"))
        except ssl.SSLError as err:
            raise WebConfigError(f"{where}: the client CA holds no PEM certificate ({err.reason or err})") from None
    elif ctx.verify_mode != ssl.CERT_NONE:
        raise WebConfigError(f"{where}.client_auth_type {client_auth} needs client_ca_file (or client_ca): "
                             "the CA that signs the clients' certificates")

    sans = _strings(section, where, "client_allowed_sans")
    if sans is not None and ctx.verify_mode == ssl.CERT_NONE:
        raise WebConfigError(f"{where}.client_allowed_sans needs client certificates: "
                             "set client_auth_type RequireAndVerifyClientCert and client_ca_file")
    return ctx, (frozenset(_canonical(s) for s in sans) if sans is not None else None)


def _version(section: Mapping, name: str, default: str) -> ssl.TLSVersion:
    value = _string(section, "tls_server_config", name) or default
    if value in OLD_TLS_VERSIONS:
        raise WebConfigError(f"tls_server_config.{name} {value}: TLS 1.0 and 1.1 are off in this OpenSSL "
                             f"({ssl.OPENSSL_VERSION}; RFC 8996 deprecates them); use TLS12 or TLS13")
    if value not in TLS_VERSIONS:
        raise WebConfigError(f"tls_server_config.{name} {value!r} is an unknown TLS version (known: TLS12, TLS13)")
    return ssl.TLSVersion[TLS_VERSIONS[value]]


def _ciphers(ctx: ssl.SSLContext, names: list[str] | None) -> None:
    if not names:
        return  # Python's defaults: ECDHE with AES-GCM, ChaCha20 or AES, no SHA-1 MACs
    unknown = [_name(n) for n in names if n not in CIPHER_SUITES and n not in TLS13_CIPHER_SUITES]
    if unknown:
        raise WebConfigError(f"tls_server_config.cipher_suites: unknown cipher {', '.join(unknown)} "
                             f"(known: {', '.join((*CIPHER_SUITES, *sorted(TLS13_CIPHER_SUITES)))})")
    openssl = [CIPHER_SUITES[n] for n in names if n in CIPHER_SUITES]
    if not openssl:
        if ctx.minimum_version < ssl.TLSVersion.TLSv1_3:
            raise WebConfigError("tls_server_config.cipher_suites lists only TLS 1.3 suites, which are not "
                                 "configurable: TLS 1.2 would have none (set min_version TLS13)")
        return
    try:
        ctx.set_ciphers(":".join(openssl))
    except ssl.SSLError:
        raise WebConfigError("tls_server_config.cipher_suites: none of them is available in this OpenSSL") from None


def _curves(ctx: ssl.SSLContext, names: list[str] | None) -> None:
    if not names:
        return
    unknown = [_name(n) for n in names if n not in CURVES]
    if unknown:
        raise WebConfigError(f"tls_server_config.curve_preferences: unknown curve {', '.join(unknown)} "
                             f"(known: {', '.join(CURVES)})")
    if len(names) > 1:
        raise WebConfigError("tls_server_config.curve_preferences: Python's ssl sets a single curve; list one "
                             "(X25519 or CurveP256 suit every current client)")
    ctx.set_ecdh_curve(CURVES[names[0]])


def _refuse_passphrase() -> bytes:
    raise WebConfigError("tls_server_config: the private key is encrypted; the toolkit reads only unencrypted keys")


def _load_key_pair(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """load_cert_chain reads files only: hand it the bytes already read (inline
    or from the files, so what is checked is what is served) through
    memory-backed files that never touch a disk. Without the password
    callback OpenSSL would prompt on the terminal for an encrypted key."""
    fds: list[int] = []
    try:
        for data in (cert, key):
            fd = os.memfd_create("cri-exporter-web-config", os.MFD_CLOEXEC)
            fds.append(fd)
            with open(fd, "wb", closefd=False) as f:
                f.write(data)
        ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}", password=_refuse_passphrase)
    except ssl.SSLError as err:
        raise WebConfigError("tls_server_config: cannot use the certificate and key (is each PEM, and is the key "
                             f"the certificate's?): {err.reason or err}") from None
    finally:
        for fd in fds:
            os.close(fd)


def _canonical(name: str) -> str:
    """An IP address in one form (Go prints 2001:db8::1, Python's ssl 2001:DB8:0:0:0:0:0:1); anything else as is."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


# ---- the file over time

Signature = tuple[tuple[int, int, int, int, int] | None, ...]


def signature(files: tuple[str, ...]) -> Signature:
    """What changes when any of `files` is rewritten or replaced: a Secret
    volume swaps a symlink (a new inode), an editor renames over the file, a
    tool writes in place (mtime, size). Stat follows links."""
    out: list[tuple[int, int, int, int, int] | None] = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


class WebConfigFile:
    """The file and the last good reading of it. `refresh` re-reads it when it
    or a file it names changed since the last attempt (rotated certificates
    are picked up so); a reading that fails is logged once and the last good
    one stays in force. The toolkit re-reads everything on each handshake and
    request instead; a stat of a few files a second costs less than that and
    notices the same changes."""

    def __init__(self, path: str):
        self.path = path
        self.config = load(path)  # WebConfigError: the caller refuses to start
        self._signature = signature(self.config.files)
        self.last_reload_ok = True
        self.last_success = time.time()
        # The directories serve's confinement allows the web config's files in (confine.build_policy's
        # read_files): what it names elsewhere after start is closed to a confined agent until it restarts.
        self.allowed_dirs = _dirs_of(self.config.files)

    def refresh(self) -> bool:
        """Whether a new reading took effect."""
        files = self.config.files
        before = signature(files)
        if before == self._signature:
            return False
        self._signature = before  # a broken state is tried once, then again when something changes
        waits: dict[str, str] = {}
        try:
            new = load(self.path)
            if (new.tls is None) != (self.config.tls is None):
                waits["tls_server_config"] = f"TLS turned {'on' if new.tls else 'off'} in {self.path}"
                raise WebConfigError(f"{self.path}: turning TLS {'on' if new.tls else 'off'} needs a restart "
                                     "(scrapers would have to change scheme at once)")
        except WebConfigError as err:
            self.last_reload_ok = False
            error = str(err)
            if err.denied is not None and self.closed_until_restart(err.denied):
                waits[err.denied] = f"named by the reloaded {self.path}"
                error += ("; the file is outside the directories the agent's confinement allowed at its start "
                          "(those of the web config's files then): restarting the agent reads it")
            log.error("web config not reloaded; serving with the last good one", path=self.path, error=error)
            restart_needed.NEEDED.set(restart_needed.WEB_CONFIG, waits)
            return False
        restart_needed.NEEDED.set(restart_needed.WEB_CONFIG, {})
        self.config = new
        if new.files != files:
            self._signature = signature(new.files)
        self.last_reload_ok = True
        self.last_success = time.time()
        log.info("web config reloaded", path=self.path, tls=new.tls is not None, users=len(new.users))
        return True

    def closed_until_restart(self, path: str) -> bool:
        """Whether serve's own confinement, not the file, refused `path`: the
        agent is confined by serve's policy, the file (its links followed) lies
        beneath none of the directories allowed at start, and its mode lets the agent read it
        (access(2) is not Landlock's to deny). Such a file opens after a restart,
        whose policy allows the directories the web config then names."""
        if confined_read.confined_by() != confined_read.BY_SERVE:
            return False
        # Landlock judges the file where its links lead: beneath a directory allowed at start, it opens.
        target = os.path.dirname(os.path.realpath(path))
        if any(_beneath(target, allowed) for allowed in self.allowed_dirs):
            return False
        return os.access(path, os.R_OK)


def _dirs_of(files: tuple[str, ...]) -> frozenset[str]:
    """As confine.build_policy allows them: each file's directory, as named and with links resolved."""
    return frozenset(d for f in files for d in (os.path.dirname(os.path.abspath(f)), os.path.dirname(os.path.realpath(f))))


def _beneath(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")
