"""Expiry dates of X.509 certificates in PEM files, read without a crypto
library and without ever keeping a key: only `-----BEGIN CERTIFICATE-----`
blocks are decoded (kubelet-client-current.pem holds the key too; it is
skipped unread), and from each only the validity's notAfter and the
subject's CN are taken (RFC 5280: Certificate ::= SEQUENCE { tbsCertificate
SEQUENCE { [0] version, serialNumber, signature, issuer, validity SEQUENCE {
notBefore, notAfter }, subject, ... } }). Files are read unrecorded: they
never go into the support bundle."""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from dataclasses import dataclass

from cri_exporter import confined_read
from cri_exporter.hostfs import HostFS

MAX_PEM_BYTES = 1 << 20
_PEM_RE = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)
_CN_OID = b"\x06\x03\x55\x04\x03"


@dataclass(frozen=True)
class Cert:
    path: str
    subject: str
    not_after: dt.datetime


def _tlv(data: bytes, i: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at i."""
    tag = data[i]
    length = data[i + 1]
    i += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[i:i + n], "big")
        i += n
    if i + length > len(data):
        raise ValueError("truncated DER")
    return tag, i, i + length


def _time(tag: int, raw: bytes) -> dt.datetime:
    text = raw.decode("ascii").rstrip("Z")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSS: 50-99 -> 19xx
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    return dt.datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=dt.timezone.utc)


def parse_der(der: bytes) -> tuple[str, dt.datetime]:
    """(subject CN or "", notAfter) of one DER certificate; ValueError if it is not one."""
    try:
        _, cert, _ = _tlv(der, 0)
        _, i, tbs_end = _tlv(der, cert)
        if der[i] == 0xA0:  # [0] EXPLICIT version
            i = _tlv(der, i)[2]
        for _ in range(3):  # serialNumber, signature, issuer
            i = _tlv(der, i)[2]
        _, v, _ = _tlv(der, i)  # validity
        i = _tlv(der, i)[2]
        _, _, after_start = _tlv(der, v)
        tag, a, b = _tlv(der, after_start)
        not_after = _time(tag, der[a:b])
        _, s, s_end = _tlv(der, i)  # subject
        cn = ""
        at = der.find(_CN_OID, s, s_end)
        if at >= 0:
            _, c, d = _tlv(der, at + len(_CN_OID))
            cn = der[c:d].decode("utf-8", "replace")
        if i >= tbs_end:
            raise ValueError("no subject")
        return cn, not_after
    except (IndexError, UnicodeDecodeError) as e:
        raise ValueError(f"not a DER certificate: {e}") from None


def read_certs(hostfs: HostFS, path: str) -> tuple[list[Cert], str]:
    """The certificates in a PEM file (other blocks, keys included, are
    skipped undecoded), or ([], why not)."""
    try:
        data = hostfs.read_bytes(path, MAX_PEM_BYTES)
    except PermissionError as e:  # a key's file, or one renewed since serve confined itself: say which
        try:
            confined_read.check(hostfs.root, path, e)
        except confined_read.DeniedByConfinement as denied:
            return [], str(denied)
        return [], f"{path}: {e.strerror or e}"
    except OSError as e:
        return [], f"{path}: {e.strerror or e}"
    certs: list = []
    for block in _PEM_RE.findall(data):
        try:
            cn, not_after = parse_der(base64.b64decode(block))
        except (ValueError, binascii.Error) as e:
            return certs, f"{path}: {e}"
        certs.append(Cert(path, cn, not_after))
    del data
    return certs, "" if certs else f"{path}: no certificate in it"
