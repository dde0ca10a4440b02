"""A self-signed certificate for an HTTP simulator, made at its first start and kept in its state directory.

A real unit keeps its certificate across reboots (nginx's key on its data volume), so a driver that pinned it
keeps working after a power cycle; the simulator does the same. The key file is private (0600).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
VALID_DAYS = 3650


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def ensure_self_signed(directory: Path, common_name: str = "127.0.0.1") -> TlsFiles:
    """``directory/cert.pem`` and ``key.pem``: reused when both exist and the cert is still valid, else new."""
    directory = Path(directory)
    files = TlsFiles(directory / CERT_NAME, directory / KEY_NAME)
    if files.cert.exists() and files.key.exists() and _still_valid(files.cert):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem = make_self_signed(common_name)
    _write_private(files.key, key_pem)
    tmp = files.cert.with_name(f".{CERT_NAME}.tmp")
    tmp.write_bytes(cert_pem)
    os.replace(tmp, files.cert)
    log.info("generated a self-signed TLS certificate %s", files.cert)
    return files


def make_self_signed(common_name: str = "127.0.0.1") -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM): EC P-256, SAN 127.0.0.1 and localhost, CA:false."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bench-harness simulator")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        # A self-signed leaf that is also its own trust anchor: CA true lets OpenSSL accept it as the
        # cafile a client pins (verify=<cert.pem>), which a CA:false leaf is not under strict X.509 rules.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=False,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert_pem, key_pem


def _still_valid(cert_path: Path) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=1)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
