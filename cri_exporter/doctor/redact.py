"""Removing secrets from everything that goes into a support bundle.

Bundles get attached to tickets; what must never be in one: registry
credentials (`auth`, `username`, `password`, `identitytoken` in containerd's
registry.configs/auths and CRI Status verbose), `Authorization` headers in
hosts.toml, bootstrap and other tokens in kubelet flags, private keys. The
redaction is textual, so it works the same on TOML, YAML, JSON, env files
and flags; values are replaced by REDACTED, keys are kept so the shape of
the config stays visible.
"""
from __future__ import annotations

import re

REDACTED = "REDACTED"

# Keys whose values are secrets, wherever they appear.
SECRET_KEY = re.compile(
    r"^(auth|username|password|passwd|identitytoken|identity_token|registrytoken|registry_token"
    r"|token|[a-z0-9_.-]*token|[a-z0-9_.-]*secret[a-z0-9_.-]*|[a-z0-9_.-]*password[a-z0-9_.-]*"
    r"|authorization|proxy-authorization|x-registry-auth|cookie|private[_-]?key|client[_-]?key[_-]?data|key[_-]?data)$",
    re.IGNORECASE,
)

_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----.*?(-----END \1-----|\Z)", re.DOTALL)
# key = value / key: value / "key": value, at line start (TOML, YAML, INI, JSON one per line).
_LINE = re.compile(r"""^(\s*-?\s*["']?)([A-Za-z0-9_.-]+)(["']?\s*[=:]\s*)(.*?)(\s*,?\s*)$""")
# key = "v" / "key": "v" anywhere (inline tables, one-line JSON).
_INLINE = re.compile(r"""(["']?)([A-Za-z0-9_.-]+)\1(\s*[=:]\s*)("(?:[^"\\]|\\.)*"|'[^']*')""")
_FLAG = re.compile(r"(--?[A-Za-z0-9_-]*(?:token|password|secret|auth)[A-Za-z0-9_-]*(?:=|\s+))(\"[^\"]*\"|'[^']*'|\S+)",
                   re.IGNORECASE)
_SCHEME = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{4,}", re.IGNORECASE)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_URL_CREDS = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s:@\"']+:[^/\s@\"']+@", re.IGNORECASE)


def _quote_like(value: str) -> str:
    v = value.strip()
    if v.startswith('"'):
        return f'"{REDACTED}"'
    if v.startswith("'"):
        return f"'{REDACTED}'"
    if v.startswith("["):
        return f'["{REDACTED}"]'
    return REDACTED


def _line(line: str) -> str:
    m = _LINE.match(line)
    if m and SECRET_KEY.match(m.group(2)) and m.group(4) and m.group(4) not in ("{", "["):
        value = _quote_like(m.group(4))
        if m.group(1).endswith('"') and value == REDACTED:  # JSON: keep it a string
            value = f'"{REDACTED}"'
        return f"{m.group(1)}{m.group(2)}{m.group(3)}{value}{m.group(5)}"
    return line


def _lines(lines: list[str]):
    """Line by line, also redacting the items of a secret key's block value:
    YAML `Authorization:` followed by `- ...` items, TOML `key = [` ... `]`."""
    block_indent: int | None = None
    in_array = False
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if in_array:
            yield line if stripped.startswith("]") else (" " * indent + f'"{REDACTED}",' if stripped else line)
            in_array = not stripped.startswith("]")
            continue
        if block_indent is not None:
            if stripped and (indent > block_indent or stripped.startswith("- ") and indent >= block_indent):
                yield " " * indent + ("- " if stripped.startswith("- ") else "") + REDACTED
                continue
            block_indent = None
        m = _LINE.match(line)
        if m and SECRET_KEY.match(m.group(2)):
            if m.group(4) == "":
                block_indent = indent
            elif m.group(4) == "[":
                in_array = True
        yield _line(line)


def _inline(m: re.Match) -> str:
    if SECRET_KEY.match(m.group(2)):
        return f"{m.group(1)}{m.group(2)}{m.group(1)}{m.group(3)}{_quote_like(m.group(4))}"
    return m.group(0)


def redact_text(text: str) -> str:
    text = _PEM.sub(lambda m: f"-----{REDACTED} {m.group(1)}-----", text)
    text = "\n".join(_lines(text.split("\n")))
    text = _INLINE.sub(_inline, text)
    text = _FLAG.sub(lambda m: m.group(1) + REDACTED, text)
    text = _SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    text = _URL_CREDS.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    return text


def redact_data(value):
    """Redact a decoded JSON/YAML value by key, then its strings by pattern."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and SECRET_KEY.match(k) and v not in (None, "", {}, [])
                    and not isinstance(v, dict) else redact_data(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact_data(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
