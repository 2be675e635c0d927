"""Certificates, bcrypt hashes and web config files for the tests of the
exporter toolkit's web config (TLS, basic auth): a CA of the tests' own
(trustme), server and client certificates from it, and a stranger CA whose
certificates must be refused."""
from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import trustme
import yaml
from cryptography import x509

PASSWORD = "pr0m-scrape-secret"


def bcrypt_hash(password: str, cost: int = 4) -> str:
    """As `htpasswd -nBC <cost>` writes it ($2y$; the same algorithm as $2b$)."""
    return "$2y$" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()[4:]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@dataclass
class Pki:
    """A CA and the files of a server certificate for 127.0.0.1/localhost, in `dir`."""

    dir: Path
    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path

    def issue(self, name: str, *sans: str, ca: trustme.CA | None = None, rsa: bool = False) -> tuple[Path, Path]:
        """A certificate (and its key) with these subject alternative names, by `ca` (default
        ours); ECDSA (trustme's default) or RSA (cert-manager's default)."""
        key_type = trustme.KeyType.RSA if rsa else trustme.KeyType.ECDSA
        cert = (ca or self.ca).issue_cert(*sans, key_type=key_type)
        cert_file, key_file = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        return cert_file, key_file

    def client_context(self, cert: tuple[Path, Path] | None = None, **settings) -> ssl.SSLContext:
        """A client trusting our CA, presenting `cert` if given; `settings` set on the context."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if cert is not None:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        for name, value in settings.items():
            setattr(ctx, name, value)
        return ctx


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca_file = directory / "ca.crt"
    ca.cert_pem.write_to_path(str(ca_file))
    pki = Pki(directory, ca, ca_file, directory / "server.crt", directory / "server.key")
    pki.issue("server", "localhost", "127.0.0.1", "::1", rsa=True)
    return pki


def der_of(pem_file: Path) -> bytes:
    """The DER of a PEM certificate file: what a client sees as the server's certificate."""
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(pem_file.read_bytes()).public_bytes(Encoding.DER)


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
