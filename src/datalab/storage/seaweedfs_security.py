"""SeaweedFS's own security for its internal endpoints (``security.toml``).

Services run on the same machine as the embedded SeaweedFS, so binding to loopback protects
nothing from them: the master (``/col/delete``, ``/dir/assign``), the volume server (needle
reads and writes) and the filer (``/buckets/...``) answer anyone who connects, and their gRPC
ports give full control. Only the S3 gateway, which checks credentials and policies, may be
reachable by services. So every internal endpoint requires what only the platform holds:

- **mutual TLS** on the master, volume and filer HTTP ports and on every gRPC port: a private
  CA and one certificate (client and server) generated at first start into ``keys/`` (0600);
  SeaweedFS's components present it to each other, the platform presents it to probe the
  filer, and a connection without it fails the TLS handshake;
- **JWT signing keys** for volume and filer reads and writes (defence in depth: a request that
  got through TLS still needs a token signed with a key only the components and the platform
  hold), and the volume and filer UIs and directory listings off.

The S3 gateway stays plain HTTP on its port: clients authenticate with S3 signatures.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from datalab.files import write_private

#: certificates are renewed at start when they expire within this time
RENEW_BEFORE = datetime.timedelta(days=30)
VALIDITY = datetime.timedelta(days=3650)
JWT_KEYS = ("volume_write", "volume_read", "filer_write", "filer_read")


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def ensure_tls(directory: Path) -> TlsFiles:
    """The CA and the one certificate SeaweedFS's components and the platform share; made at
    first start, made again when missing, unreadable or close to expiry."""
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    if not _still_valid(files):
        _generate(files)
    return files


def _still_valid(files: TlsFiles) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        x509.load_pem_x509_certificate(files.ca.read_bytes())
        serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except (OSError, ValueError):
        return False
    now = datetime.datetime.now(datetime.UTC)
    return cert.not_valid_after_utc - RENEW_BEFORE > now


def _generate(files: TlsFiles) -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "datalab embedded SeaweedFS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "datalab-seaweedfs")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    write_private(
        files.key,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    write_private(files.cert, cert.public_bytes(pem))
    write_private(files.ca, ca.public_bytes(pem))


def ensure_jwt_keys(path: Path) -> dict[str, str]:
    """The JWT signing keys of the volume servers and the filer, kept across restarts."""
    try:
        keys = json.loads(path.read_text())
        if all(isinstance(keys.get(name), str) and keys[name] for name in JWT_KEYS):
            return {name: keys[name] for name in JWT_KEYS}
    except (OSError, ValueError, AttributeError):
        pass
    keys = {name: secrets.token_urlsafe(32) for name in JWT_KEYS}
    write_private(path, json.dumps(keys, indent=2) + "\n")
    return keys


def security_toml(tls: TlsFiles, jwt_keys: dict[str, str]) -> str:
    """The ``security.toml`` every SeaweedFS component reads from its working directory."""
    ca, cert, key = (json.dumps(str(p)) for p in (tls.ca, tls.cert, tls.key))  # TOML strings
    identity = f"cert = {cert}\nkey = {key}\n"
    sections = [
        "# written by datalab at each start; see datalab/storage/seaweedfs_security.py",
        f'[jwt.signing]\nkey = "{jwt_keys["volume_write"]}"\nexpires_after_seconds = 10\n',
        f'[jwt.signing.read]\nkey = "{jwt_keys["volume_read"]}"\nexpires_after_seconds = 10\n',
        f'[jwt.filer_signing]\nkey = "{jwt_keys["filer_write"]}"\nexpires_after_seconds = 10\n',
        f'[jwt.filer_signing.read]\nkey = "{jwt_keys["filer_read"]}"\nexpires_after_seconds = 10\n',
        "[access]\nui = false\n",
        "[filer.expose_directory_metadata]\nenabled = false\n",
        f"[grpc]\nca = {ca}\n",
        *(f"[grpc.{part}]\n{identity}" for part in ("master", "volume", "filer", "s3", "client")),
        f"[https.client]\nenabled = true\n{identity}ca = {ca}\n",
        *(f"[https.{part}]\n{identity}ca = {ca}\n" for part in ("master", "volume", "filer")),
    ]
    return "\n".join(sections)
