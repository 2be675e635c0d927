"""Removing secrets from every string that leaves the process.

The doctor's text and JSON reports, serve's /doctor, the support bundle and
the logs all pass through here: redaction is a property of the output, not of
each file type, so a secret quoted in a finding is caught like one in a
bundled file. What counts as a secret errs toward redacting:

- the value of any key whose name says secret (password, token, secret,
  auth, credential, api/access/private key, cookie, ...; see is_secret_key) in
  TOML (dotted and quoted keys, inline tables, arrays and multi-line
  strings), YAML (block values too), JSON, INI and env files, systemd
  `Environment=` lines (each assignment by its variable's name), and flags;
- every value under an HTTP header table (`[host."...".header]` in hosts.toml,
  containerd's `registry.headers`, `headers` in decoded JSON): a custom auth
  header cannot be told from a harmless one by its name;
- every value of a table named like a secret (`[...configs."reg".auth]`);
- URL userinfo (`scheme://user:pass@`, `scheme://token@`) and the scheme-less
  `user:pass@host` form Go's proxy parsing accepts;
- `Bearer`/`Basic`/`Token` credentials, JWTs, PEM private key blocks.

Keys stay, values become REDACTED, so the shape of a config stays readable.
Names ending in file/path/dir hold paths, not secrets, and stay.

Linear time: a garbled 32 KB line once took minutes through backtracking
regexes. Every pattern here starts only at a token boundary (look-behind)
and uses possessive quantifiers, and multi-character scans are str.find
loops, so the cost grows with the input, never with its square.
"""
from __future__ import annotations

import re

REDACTED = "REDACTED"

_SECRET_WORDS = ("password", "passwd", "passphrase", "secret", "token", "apikey", "accesskey", "privatekey",
                 "secretkey", "clientkey", "keydata", "credential", "cookie", "signature", "auth", "bearer",
                 "sessionkey", "encryptionkey", "signingkey", "masterkey", "license")
_SECRET_NAMES = frozenset(("pass", "pw", "pwd", "key", "username", "salt", "otp", "pin"))
_SECRET_ENDINGS = ("pass", "pw", "pwd", "key", "keys")
_PATH_ENDINGS = ("file", "files", "path", "paths", "dir", "dirs")


def _normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def is_secret_key(name: str) -> bool:
    """A key, variable or flag name whose value is a secret."""
    n = _normal(name)
    if not n or n.endswith(_PATH_ENDINGS):
        return False
    # certificate-authority-data is a CA; the kubelet's `authentication:` holds
    # settings (anonymous, webhook), its credentials are files.
    n = n.replace("authority", "").replace("authentication", "")
    return n in _SECRET_NAMES or n.endswith(_SECRET_ENDINGS) or any(w in n for w in _SECRET_WORDS)


def is_header_key(name: str) -> bool:
    """A table of HTTP headers: `header`, `headers`, the kubelet's `staticPodURLHeader`."""
    return _normal(name).endswith(("header", "headers"))


# ---- values that are secrets wherever they stand ----

_URL_USERINFO = re.compile(r"(?<![\w+.-])([a-zA-Z][a-zA-Z0-9+.-]*+://)([^/\s@\"'<>?#]++)@")
# user:pass@host without a scheme (HTTP_PROXY=user:pass@proxy:3128); not an
# image reference's name:tag@sha256:digest.
_BARE_USERINFO = re.compile(r"(?<![\w.%+/@:\\-])([\w.%+-]++):([^\s@/\"'<>=,;&?#]++)@(?!sha\d++:)(?=[\w\[])")
_SCHEME = re.compile(r"(?<![\w-])(Bearer|Basic|Token|Digest|Negotiate|Bot)(\s++)([\w.~+/=-]++)", re.IGNORECASE)
_JWT = re.compile(r"(?<![\w-])eyJ[\w-]{5,}+\.[\w-]{5,}+\.[\w-]*+")
_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]{0,40}PRIVATE KEY)-----")


def _redact_pem(text: str) -> str:
    out, pos = [], 0
    while (m := _PEM_BEGIN.search(text, pos)) is not None:
        end_marker = f"-----END {m.group(1)}-----"
        end = text.find(end_marker, m.end())
        out.append(text[pos:m.start()])
        out.append(f"-----{REDACTED} {m.group(1)}-----")
        pos = len(text) if end < 0 else end + len(end_marker)
    out.append(text[pos:])
    return "".join(out)


def _scheme(m: re.Match[str]) -> str:
    """`Bearer <credential>`, not prose such as "Basic authentication"."""
    value = m.group(3)
    if value.isalpha() and (value.islower() or value[0].isupper() and value[1:].islower()) or len(value) < 4:
        return m.group(0)
    return f"{m.group(1)}{m.group(2)}{REDACTED}"


def _redact_patterns(text: str) -> str:
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    text = _BARE_USERINFO.sub(f"{REDACTED}@", text)
    text = _SCHEME.sub(_scheme, text)
    return _JWT.sub(REDACTED, text)


# ---- key = value pairs inside a line ----

# A key: bare, or quoted, or a dotted path of those (TOML), or a flag's name,
# then = or :. The look-behind makes a run of key characters start a match
# only at its first character.
_SEGMENT = r"""(?:"(?:[^"\\\n]|\\.)*+"|'[^'\n]*+'|[A-Za-z_$@][\w$@-]*+)"""
# ":" separates only where YAML or JSON would: before a space, a quote or a
# bracket, or after a quoted key (image:tag and host:port are not pairs).
_KEY = re.compile(rf"""(?<![\w$@.\\-])(--?)?({_SEGMENT}(?:\s*+\.\s*+{_SEGMENT})*+)(\s*+)"""
                  r"""(=|(?<=["']):|:(?=[\s"'\[{]|$))(\s*+)""")


def _segments(key: str) -> list[tuple[str, bool]]:
    """(name, quoted) of each segment of a dotted key."""
    out = []
    for m in re.finditer(_SEGMENT, key):
        s = m.group(0)
        out.append((s[1:-1], True) if s[:1] in "\"'" else (s, False))
    return out


def _key_is_secret(key: str) -> bool:
    """Any bare segment secret or a header table: `auth.auth`, `headers.X`.
    Quoted segments are names (hosts, plugin ids), except the last one, which
    is the key itself (`"password": ...` in JSON)."""
    segs = _segments(key)
    for i, (name, quoted) in enumerate(segs):
        last = i == len(segs) - 1
        if (not quoted or last) and (is_secret_key(name) or (not last and is_header_key(name))):
            return True
    return False


def _value_end(line: str, start: int) -> int:
    """Where a value starting at `start` ends: a whole quoted string, a whole
    [...] on this line, else up to whitespace or a separator."""
    if start >= len(line):
        return start
    c = line[start]
    if c in "\"'":
        i = start + 1
        while i < len(line):
            ch = line[i]
            if ch == "\\" and c == '"':
                i += 2
                continue
            if ch == c:
                return i + 1
            i += 1
        return len(line)
    if c == "[":
        end = line.find("]", start)
        return len(line) if end < 0 else end + 1
    i = start
    while i < len(line) and not line[i].isspace() and line[i] not in ",;&}]\"'":
        i += 1
    return i


def _placeholder(value: str) -> str:
    """REDACTED in the value's own shape: quoted, an array, bare; a trailing
    comma (JSON, YAML flow) stays so the document keeps its structure."""
    if value.endswith(",") and len(value) > 1:
        return _placeholder(value[:-1].rstrip()) + ","
    if value[:1] in "\"'":
        return f"{value[0]}{REDACTED}{value[0]}"
    if value[:1] == "[":
        return f'["{REDACTED}"]'
    return REDACTED


def _redact_pairs(line: str, force: bool = False) -> str:
    """Every `key = value` / `key: value` / `--flag=value` in the line whose key
    is secret (or every one, with `force`). A non-secret key's value is
    scanned too: `Environment="TOKEN=x"` holds a pair inside a value."""
    out, pos, scan = [], 0, 0
    while (m := _KEY.search(line, scan)) is not None:
        start = m.end()
        if start < len(line) and line[start] in "{\n" or start >= len(line):
            scan = m.end()
            continue
        secret = force or _key_is_secret(m.group(2))
        flag_space = m.group(1) and m.group(4) == ":"
        if not secret or flag_space:
            scan = m.end()
            continue
        end = _value_end(line, start)
        if end == start:
            scan = m.end()
            continue
        out.append(line[pos:start])
        out.append(_placeholder(line[start:end]))
        pos = scan = end
    out.append(line[pos:])
    return "".join(out)


_FLAG_SPACE = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*+)(\s++)(?=[^\s-])")


def _redact_flags(line: str) -> str:
    """`--token abc` (a flag and its value apart): the value after a secret flag."""
    out, pos = [], 0
    for m in _FLAG_SPACE.finditer(line):
        if m.start() < pos or not is_secret_key(m.group(1)):
            continue
        end = _value_end(line, m.end())
        out.append(line[pos:m.end()])
        out.append(_placeholder(line[m.end():end]))
        pos = end
    out.append(line[pos:])
    return "".join(out)


# ---- whole lines and blocks ----

_TABLE = re.compile(r"""^\s*+\[\[?+((?:"(?:[^"\\]|\\.)*+"|'[^']*+'|[^\[\]"'])*+)\]\]?+\s*+(?:#.*+)?$""")
_LINE_KEY = re.compile(rf"""^(\s*+(?:-\s++)?(?:export\s++)?)({_SEGMENT}(?:\s*+\.\s*+{_SEGMENT})*+)(\s*+[=:]\s*+)(.*)$""")
_MULTILINE_OPEN = re.compile(r'^("""|\'\'\')')
_BLOCK_SCALAR = re.compile(r"^[|>][+-]?\d*\s*(?:#.*)?$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block_line(line: str) -> str:
    """A line inside a secret block: keys kept, every value redacted."""
    stripped = line.strip()
    if not stripped or stripped in ("]", "],", "}", "},", ")") or stripped.startswith("#"):
        return line
    m = _LINE_KEY.match(line)
    if m and m.group(4).strip() not in ("", "{", "[", "|", ">"):
        return f"{m.group(1)}{m.group(2)}{m.group(3)}{_placeholder(m.group(4).strip())}"
    if m:
        return line
    pad = line[: _indent(line)]
    if stripped.startswith("- "):
        return f"{pad}- {REDACTED}"
    return f"{pad}{_placeholder(stripped)}"


def redact_text(text: str) -> str:
    """`text` with every secret replaced by REDACTED (see the module docstring)."""
    if not text:
        return text
    text = _redact_pem(text)
    out: list[str] = []
    secret_table = False  # inside a TOML table whose name says secret or header
    block_indent: int | None = None  # inside a YAML/JSON block under a secret key
    closing: str | None = None  # inside a multi-line string or array under a secret key
    for line in text.split("\n"):
        if closing is not None:
            if closing in line:
                out.append(line[line.index(closing):])
                closing = None
            else:
                out.append(REDACTED if line.strip() else line)
            continue
        if block_indent is not None:
            s = line.strip()
            # YAML may put a key's list items at the key's own indent.
            if s and (_indent(line) < block_indent or _indent(line) == block_indent and not s.startswith("- ")):
                block_indent = None  # the block ended: this line is read as any other
            else:
                out.append(_block_line(line))
                continue
        table = _TABLE.match(line)
        if table:
            # Quoted segments of a table name are hosts and plugin ids, never keys.
            secret_table = any(is_secret_key(name) or is_header_key(name)
                               for name, quoted in _segments(table.group(1)) if not quoted)
            out.append(_redact_patterns(line))
            continue
        m = _LINE_KEY.match(line)
        if m:
            segments = _segments(m.group(2))
            secret = secret_table or _key_is_secret(m.group(2))
            header = bool(segments) and is_header_key(segments[-1][0])
            v = m.group(4).strip()
            if secret or header:
                if v in ("", "|", ">", "{", "[") or _BLOCK_SCALAR.match(v):
                    block_indent = _indent(line)
                    if v == "[" and not line.lstrip().startswith(("-", '"')) and "=" in m.group(3):
                        block_indent, closing = None, "]"  # TOML array
                    out.append(line)
                    continue
                ml = _MULTILINE_OPEN.match(v)
                if ml and v.count(ml.group(1)) == 1:
                    closing = ml.group(1)
                    rest = REDACTED if v[len(closing):].strip() else ""
                    out.append(f"{m.group(1)}{m.group(2)}{m.group(3)}{closing}{rest}")
                    continue
                if secret and not v.startswith("{"):
                    out.append(f"{m.group(1)}{m.group(2)}{m.group(3)}{_placeholder(v)}")
                    continue
                out.append(_patterns_and_pairs(line, force=True))
                continue
        out.append(_patterns_and_pairs(line))
    return "\n".join(out)


def _patterns_and_pairs(line: str, force: bool = False) -> str:
    # Patterns first: `Authorization: Basic <b64>` inside a quoted string is one
    # pair whose bare value would otherwise end at "Basic".
    return _redact_flags(_redact_pairs(_redact_patterns(line), force))


def redact_data(value):
    """A decoded JSON/YAML value with secrets redacted: every leaf under a
    secret key or a header table, then every other string by redact_text."""
    if isinstance(value, dict):
        return {k: _redact_all(v) if is_secret_key(str(k)) or is_header_key(str(k)) else redact_data(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def _redact_all(value):
    """Every leaf under a secret key; keys of nested maps stay visible."""
    if isinstance(value, dict):
        return {k: _redact_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_all(v) for v in value]
    return value if value is None or value == "" else REDACTED
