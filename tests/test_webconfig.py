"""The exporter toolkit's web config file as cri_exporter.webconfig reads it,
and what webauth does with it: the checks a file must pass (each refusal names
the field, never a value), and basic auth's cost bounds. The TLS and HTTP side,
over real connections: tests/test_web_tls.py."""
from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

import pytest
import trustme

from cri_exporter import webauth
from cri_exporter.webauth import BUSY, OK, UNAUTHORIZED, BasicAuth, TokenBucket, basic_credentials
from cri_exporter.webconfig import CIPHER_SUITES, TLS13_CIPHER_SUITES, RateLimit, WebConfigError, WebConfigFile, load, sans_of
from tests.webtls import PASSWORD, basic, bcrypt_hash, make_pki

HASH = bcrypt_hash(PASSWORD)


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


def config_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pki" / "web-config.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return str(path)


TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"


# ---- what a good file gives ------------------------------------------------------

def test_the_toolkits_sample_file_reads_as_it_means(pki, tmp_path, monkeypatch):
    """docs/web-config.yml of exporter-toolkit, with our files and hashes."""
    path = config_file(tmp_path, TLS + f"basic_auth_users:\n  alice: {HASH}\n  bob: {bcrypt_hash('b')}\n"
                       "rate_limit:\n  interval: \"1s\"\n  burst: 20\n")
    monkeypatch.chdir("/")  # relative paths are the config file's directory's, not the working directory's
    config = load(path)
    assert isinstance(config.tls, ssl.SSLContext)
    assert config.tls.minimum_version == ssl.TLSVersion.TLSv1_2 and config.tls.maximum_version == ssl.TLSVersion.TLSv1_3
    assert config.tls.verify_mode == ssl.CERT_NONE
    assert config.tls.options & ssl.OP_CIPHER_SERVER_PREFERENCE  # prefer_server_cipher_suites defaults to true
    assert set(config.users) == {"alice", "bob"} and config.users["alice"] == HASH.encode()
    assert config.rate_limit == RateLimit(interval=1.0, burst=20)
    assert config.files == (path, str(pki.cert_file), str(pki.key_file))


def test_an_empty_file_is_plain_http_without_auth(tmp_path):
    config = load(config_file(tmp_path, ""))
    assert config.tls is None and not config.users and not config.headers and config.rate_limit is None


def test_inline_certificate_key_and_client_ca(pki, tmp_path):
    def block(text: str) -> str:
        return "|\n" + "".join(f"    {line}\n" for line in text.splitlines())

    path = config_file(tmp_path, "tls_server_config:\n"
                       f"  cert: {block(pki.cert_file.read_text())}  key: {block(pki.key_file.read_text())}"
                       f"  client_ca: {block(pki.ca_file.read_text())}  client_auth_type: VerifyClientCertIfGiven\n")
    config = load(path)
    assert config.tls is not None and config.tls.verify_mode == ssl.CERT_OPTIONAL
    assert config.tls.cert_store_stats()["x509_ca"] == 1
    assert config.files == (path,)  # nothing else to watch


def test_every_cipher_the_toolkit_accepts_and_each_curve(pki, tmp_path):
    """The toolkit's testdata/web_config_noAuth_allCiphers.good.yml lists all of Go's
    tls.CipherSuites(), TLS 1.3's included (which Go, and so this, does not configure)."""
    names = "".join(f"    - {n}\n" for n in (*CIPHER_SUITES, *TLS13_CIPHER_SUITES))
    config = load(config_file(tmp_path, TLS + f"  max_version: TLS12\n  cipher_suites:\n{names}"))
    assert config.tls is not None
    offered = {c["name"] for c in config.tls.get_ciphers() if c["protocol"] != "TLSv1.3"}
    assert offered == set(CIPHER_SUITES.values())
    for curve in ("CurveP256", "CurveP384", "CurveP521", "X25519"):
        assert load(config_file(tmp_path, TLS + f"  curve_preferences: [{curve}]\n")).tls is not None


def test_headers_and_durations(tmp_path):
    config = load(config_file(tmp_path, "http_server_config:\n  http2: false\n  headers:\n"
                              "    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n"
                              "    X-Content-Type-Options: nosniff\n    X-XSS-Protection: ''\n"
                              "rate_limit:\n  interval: 1m30s\n  burst: 2\n"))
    # a blank value unsets the header, as the toolkit documents
    assert config.headers == {"X-Frame-Options": "deny", "Strict-Transport-Security": "max-age=31536000",
                              "X-Content-Type-Options": "nosniff"}
    assert config.rate_limit == RateLimit(90.0, 2)
    for interval, seconds in (("250ms", 0.25), ("1.5h", 5400.0), (2_000_000_000, 2.0)):  # an integer is nanoseconds, as yaml.v2 reads it
        assert load(config_file(tmp_path, f"rate_limit:\n  interval: {interval}\n  burst: 1\n")).rate_limit == RateLimit(seconds, 1)
    assert load(config_file(tmp_path, "rate_limit:\n  interval: 0\n  burst: 5\n")).rate_limit is None  # 0: no limit


# ---- what a bad file gets: the field named, the value never ------------------------

BAD = {
    "unknown section": ("tls_server_configg:\n  cert_file: x\n", "unknown field 'tls_server_configg'"),
    "unknown TLS field": ("tls_server_config:\n  cert_filse: server.crt\n",
                          "tls_server_config: unknown field 'cert_filse'"),
    "key given twice": (TLS + "  key_file: other.key\n", "key 'key_file' given twice"),
    "no key": ("tls_server_config:\n  cert_file: server.crt\n", "missing one of key or key_file"),
    "no cert": ("tls_server_config:\n  key_file: server.key\n", "missing one of cert or cert_file"),
    "cert twice": (TLS + "  cert: x\n", "set one of cert and cert_file, not both"),
    "missing file": ("tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n",
                     "tls_server_config.cert_file {dir}/nope.crt: No such file or directory"),
    "key of another cert": ("tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n",
                            "is the key the certificate's?): KEY_VALUES_MISMATCH"),
    "key of another type": ("tls_server_config:\n  cert_file: server.crt\n  key_file: ecdsa.key\n",
                            "is the key the certificate's?): NO_CERTIFICATE_ASSIGNED"),
    "CA without policy": (TLS + "  client_ca_file: ca.crt\n", "client CAs are configured without a client_auth_type"),
    "policy without CA": (TLS + "  client_auth_type: RequireAndVerifyClientCert\n", "needs client_ca_file"),
    "unverified client certs": (TLS + "  client_auth_type: RequireAnyClientCert\n  client_ca_file: ca.crt\n",
                                "accepts client certificates nobody verified"),
    "unknown policy": (TLS + "  client_auth_type: Maybe\n", "client_auth_type 'Maybe' is unknown"),
    "CA file without certificates": (TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.key\n",
                                     "the client CA holds no PEM certificate"),
    "TLS 1.1": (TLS + "  min_version: TLS11\n", "min_version TLS11: TLS 1.0 and 1.1 are off"),
    "unknown version": (TLS + "  min_version: TLS111\n", "min_version 'TLS111' is an unknown TLS version"),
    "min above max": (TLS + "  min_version: TLS13\n  max_version: TLS12\n", "min_version is above max_version"),
    "unknown cipher": (TLS + "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n", "unknown cipher 'TLS_RSA_WITH_RC4_128_SHA'"),
    "TLS 1.3 suites only": (TLS + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "lists only TLS 1.3 suites"),
    "two curves": (TLS + "  curve_preferences: [X25519, CurveP256]\n", "sets a single curve"),
    "unknown curve": (TLS + "  curve_preferences: [CurveP224]\n", "unknown curve 'CurveP224'"),
    "TLS settings but no TLS": ("tls_server_config:\n  min_version: TLS13\n", "sets min_version but no certificate"),
    "SANs without client certs": (TLS + "  client_allowed_sans: [x]\n", "client_allowed_sans needs client certificates"),
    "http2": ("http_server_config:\n  http2: true\n", "speaks HTTP/1.1 only"),
    "unknown header": ("http_server_config:\n  headers:\n    Content-Type: foo\n",
                       "header 'Content-Type' can not be configured"),
    "bad header value": ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                         "invalid value for X-Frame-Options; expected one of deny, sameorigin"),
    "bad interval": ("rate_limit:\n  interval: soon\n  burst: 1\n", "rate_limit.interval 'soon' is not a duration"),
    "not a mapping": ("- tls_server_config\n", "must be a YAML mapping"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_file_is_refused_naming_the_field(pki, tmp_path, case):
    text, want = BAD[case]
    pki.issue("other", "localhost", rsa=True)
    pki.issue("ecdsa", "localhost")
    path = config_file(tmp_path, text)
    with pytest.raises(WebConfigError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}: ")
    assert want.format(dir=pki.dir) in str(err.value)


def test_no_secret_is_quoted_in_a_refusal(pki, tmp_path):
    """A hash that is not one, a YAML error on a hash's line, a key in the wrong place:
    the messages locate them, and go to the log, so they must not quote them."""
    key = pki.key_file.read_text()
    cases = [
        f"basic_auth_users:\n  john: doe-{PASSWORD}\n",
        f"basic_auth_users:\n  alice: {HASH}\n  bob: [{HASH}\n",
        "tls_server_config:\n  " + HASH + ": x\n",
        "tls_server_config:\n  key: |\n" + "".join(f"    {line}\n" for line in key.splitlines()) + "  cert: x\n",
    ]
    for text in cases:
        with pytest.raises(WebConfigError) as err:
            load(config_file(tmp_path, text))
        message = str(err.value)
        assert PASSWORD not in message and HASH not in message and HASH[7:20] not in message, message
        assert "PRIVATE KEY" not in message and key.splitlines()[1] not in message, message
    assert "the password of user 'john' is not a bcrypt hash" in _refusal(tmp_path, cases[0])
    assert "line 3" in _refusal(tmp_path, cases[1])


def test_an_encrypted_key_is_refused_without_a_prompt(pki, tmp_path):
    """OpenSSL asks for a passphrase on the terminal unless told otherwise; the
    toolkit reads unencrypted keys only."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki.key_file.read_bytes(), password=None)
    (pki.dir / "locked.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.BestAvailableEncryption(b"pass")))
    assert "the private key is encrypted" in _refusal(tmp_path, "tls_server_config:\n  cert_file: server.crt\n  key_file: locked.key\n")


def _refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(WebConfigError) as err:
        load(config_file(tmp_path, text))
    return str(err.value)


# ---- the file over time ------------------------------------------------------------

def test_a_change_is_taken_a_bad_one_kept_out_and_tls_stays_as_started(pki, tmp_path):
    path = config_file(tmp_path, TLS + f"basic_auth_users:\n  alice: {HASH}\n")
    web = WebConfigFile(path)
    first = web.config
    assert not web.refresh() and web.config is first  # nothing changed: not even read

    other = bcrypt_hash("other")
    Path(path).write_text(TLS + f"basic_auth_users:\n  alice: {other}\n  bob: {HASH}\n")
    assert web.refresh() and web.last_reload_ok and set(web.config.users) == {"alice", "bob"}

    good = web.config
    Path(path).write_text(TLS + "basic_auth_users:\n  alice: nope\n")
    assert not web.refresh() and not web.last_reload_ok and web.config is good
    assert not web.refresh() and not web.last_reload_ok  # the same broken file is not read again

    Path(path).write_text(f"basic_auth_users:\n  alice: {HASH}\n")  # TLS off: a restart's business
    assert not web.refresh() and web.config is good and web.config.tls is not None

    cert, key = pki.issue("rotated", "localhost")
    os.replace(cert, pki.cert_file)  # a file the config names changed: read again
    os.replace(key, pki.key_file)
    Path(path).write_text(TLS + f"basic_auth_users:\n  alice: {HASH}\n")
    assert web.refresh() and web.last_reload_ok and web.config is not good


# ---- basic auth ------------------------------------------------------------------

def test_basic_credentials_are_read_as_go_reads_them():
    assert basic_credentials(basic("alice", "p:w")["Authorization"]) == (b"alice", b"p:w")
    assert basic_credentials("basic " + basic("a", "")["Authorization"][6:]) == (b"a", b"")  # the scheme in any case
    for bad in (None, "", "Bearer abc", "Basic !!!", "Basic YWxpY2U=", "Basic YWxpY2U6cA"):  # no colon; bad padding
        assert basic_credentials(bad) is None, bad


def run(coro):
    return asyncio.run(coro)


def test_right_and_wrong_credentials_are_each_hashed_once():
    users = {"alice": HASH.encode(), "bob": bcrypt_hash("bob").encode()}

    async def scenario():
        auth = BasicAuth()
        try:
            outcomes = [await auth.check(users, basic(u, p)["Authorization"], "10.0.0.1")
                        for u, p in [("alice", PASSWORD), ("alice", PASSWORD), ("alice", "wrong"), ("alice", "wrong"),
                                     ("mallory", PASSWORD), ("mallory", PASSWORD), ("bob", PASSWORD)]]
            return outcomes, auth.hashed
        finally:
            auth.close()

    outcomes, hashed = run(scenario())
    assert outcomes == [OK, OK, UNAUTHORIZED, UNAUTHORIZED, UNAUTHORIZED, UNAUTHORIZED, UNAUTHORIZED]
    # alice right, alice wrong, mallory (an unknown user costs a bcrypt like a known
    # one: no timing tells who exists; alice's password does not let mallory in), bob wrong
    assert hashed == 4


def test_only_the_first_72_bytes_of_a_password_count():
    """bcrypt reads 72 bytes; htpasswd and Go's bcrypt hash just those (the
    `bcrypt` package 5 raises on longer ones instead)."""
    long = "x" * 72
    users = {"alice": bcrypt_hash(long).encode()}

    async def check(password):
        auth = BasicAuth()
        try:
            return await auth.check(users, basic("alice", password)["Authorization"], "c")
        finally:
            auth.close()

    assert run(check(long + "more")) == OK and run(check(long[:-1])) == UNAUTHORIZED


def test_checks_waiting_for_bcrypt_are_bounded_per_client_and_in_all(monkeypatch):
    """A flood of distinct wrong passwords gets BUSY past the bound at once,
    without a bcrypt; a client elsewhere still gets its check through."""
    users = {"alice": bcrypt_hash(PASSWORD, cost=10).encode()}

    async def scenario():
        auth = BasicAuth()
        try:
            flood = [auth.check(users, basic("alice", f"guess{i}")["Authorization"], "10.0.0.66") for i in range(20)]
            others = [auth.check(users, basic("alice", f"other{i}")["Authorization"], f"10.0.1.{i}") for i in range(5)]
            prometheus = auth.check(users, basic("alice", PASSWORD)["Authorization"], "10.0.0.9")
            results = await asyncio.gather(prometheus, *flood, *others)
            return results, auth.hashed
        finally:
            auth.close()

    results, hashed = run(scenario())
    prometheus, flood, others = results[0], results[1:21], results[21:]
    assert prometheus == OK
    assert flood.count(UNAUTHORIZED) == webauth.MAX_PENDING_PER_CLIENT and flood.count(BUSY) == 20 - webauth.MAX_PENDING_PER_CLIENT
    assert others.count(UNAUTHORIZED) == webauth.MAX_PENDING - 2 and others.count(BUSY) == 5 - (webauth.MAX_PENDING - 2)
    assert hashed == webauth.MAX_PENDING


def test_token_bucket_is_go_rates_allow():
    now = [100.0]
    bucket = TokenBucket(RateLimit(interval=1.0, burst=3), clock=lambda: now[0])
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]  # starts full
    now[0] += 1.5
    assert [bucket.allow() for _ in range(2)] == [True, False]  # one token a second
    now[0] += 100
    assert sum(bucket.allow() for _ in range(10)) == 3  # never more than the burst
    assert not TokenBucket(RateLimit(1.0, 0)).allow()  # burst 0 refuses everything, as with the toolkit


def test_subject_alternative_names_as_pythons_ssl_gives_them(tmp_path):
    """Python's ssl prints an IPv6 address in full, upper case (2001:DB8:0:0:0:0:0:1
    on 3.11), Go in short form, which is what operators write."""
    cert = trustme.CA().issue_cert("prometheus.example", "2001:db8::1", "10.0.0.1", "ops@example.com")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    # getpeercert()'s decoder, without a connection (CPython's own tests use it)
    decoded = ssl._ssl._test_decode_cert(str(tmp_path / "c.pem"))
    assert ("IP Address", "2001:DB8:0:0:0:0:0:1") in decoded["subjectAltName"]
    assert sans_of(decoded) == {"prometheus.example", "2001:db8::1", "10.0.0.1", "ops@example.com"}
    assert sans_of(None) == set()
