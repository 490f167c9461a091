"""The Onyxia injection context (``xOnyxiaContext``): what a launch knows about its user,
project, region and credentials, as the dict that ``x-onyxia.overwriteDefaultWith`` expressions
(``user.idep``, ``{{s3.AWS_ACCESS_KEY_ID}}``, ``region.resources.cpuLimit``...) read from.

:func:`build_context` is pure: the random parts (one-time password, random subdomain) come
from the ``rng`` passed in (default: :class:`secrets.SystemRandom`), so tests pass a seeded
:class:`random.Random` and get the same dict every time.

The shape follows Onyxia's ``XOnyxiaContext`` type (``web/src/core/ports/OnyxiaApi/XOnyxia.ts``)
so that real Onyxia charts resolve unchanged. Datalab adds a few keys, marked below.
"""

from __future__ import annotations

import base64
import random
import secrets
import string
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

_PASSWORD_ALPHABET = string.ascii_letters + string.digits
_SUBDOMAIN_ALPHABET = string.digits


@dataclass(frozen=True)
class ContextUser:
    idep: str  # the user name (Onyxia: "idep")
    name: str = ""  # display name
    email: str = ""
    ip: str = ""  # the client's IP, for IP allow-lists
    lang: str = "en"
    dark_mode: bool = False
    decoded_id_token: dict[str, Any] = field(default_factory=dict)
    access_token: str = ""
    refresh_token: str = ""


@dataclass(frozen=True)
class ContextProject:
    id: str  # e.g. "user-alice" or "project-sandbox"
    # the project's service password, shared by its services (Onyxia's servicePassword, which
    # Onyxia injects as user.password too)
    password: str = ""


@dataclass(frozen=True)
class S3Context:
    endpoint_url: str  # e.g. "https://minio.example.org" or "http://127.0.0.1:8333"
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""
    region: str = "us-east-1"
    bucket: str = ""
    object_name_prefix: str = ""  # the user may read/write every key under this prefix
    path_style_access: bool = True
    is_anonymous: bool = False
    # datalab additions: the AWS container-credentials endpoint that renews the session
    credentials_url: str = ""  # AWS_CONTAINER_CREDENTIALS_FULL_URI
    credentials_authorization: str = ""  # AWS_CONTAINER_AUTHORIZATION_TOKEN ("Bearer ...")


@dataclass(frozen=True)
class VaultContext:
    address: str  # VAULT_ADDR
    token: str = ""
    mount: str = "onyxia-kv"
    top_dir: str = ""  # the user's or project's directory in the KV engine


@dataclass(frozen=True)
class GitContext:
    name: str = ""
    email: str = ""
    credentials_cache_duration: int = 0
    token: str = ""
    project: str = ""  # default repository URL (Onyxia charts read git.project)


@dataclass(frozen=True)
class KubernetesContext:
    domain: str = "localhost"
    ingress_class_name: str = ""
    ingress: bool = True
    route: bool = False
    istio_enabled: bool = False
    istio_gateways: tuple[str, ...] = ()
    init_script_url: str = ""
    init_script_checksum: str = ""  # k8s.initScriptCheckSum: Onyxia's charts read it
    use_cert_manager: bool = False
    cert_manager_cluster_issuer: str = ""


@dataclass(frozen=True)
class RegionContext:
    """Admin settings of the region (Onyxia's region configuration)."""

    id: str = "local"
    default_ip_protection: bool = False
    default_network_policy: bool = False
    allowed_uri_pattern: str = "^https://"
    custom_values: dict[str, Any] = field(default_factory=dict)
    tolerations: list[Any] = field(default_factory=list)
    network_policy_from: list[Any] = field(default_factory=list)  # Onyxia: region.from
    node_selector: dict[str, Any] = field(default_factory=dict)
    startup_probe: dict[str, Any] = field(default_factory=dict)
    sliders: dict[str, dict[str, Any]] = field(default_factory=dict)
    # keys cpuRequest, cpuLimit, memoryRequest, memoryLimit, disk, gpu (strings like "2Gi")
    resources: dict[str, str] = field(default_factory=dict)
    openshift_scc: dict[str, Any] | None = None
    kubernetes: KubernetesContext = field(default_factory=KubernetesContext)
    http_proxy: str = ""
    https_proxy: str = ""
    no_proxy: str = ""
    pypi_proxy_url: str = ""
    conda_proxy_url: str = ""
    cran_proxy_url: str = ""
    package_manager_url: str = ""
    ca_certs: str = ""
    path_to_ca_bundle: str = ""


def build_context(
    user: ContextUser,
    project: ContextProject,
    region: RegionContext | None = None,
    *,
    s3: S3Context | None = None,
    vault: VaultContext | None = None,
    git: GitContext | None = None,
    mlflow_tracking_uri: str = "",
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """The injection context for one launch. Missing S3 / Vault give disabled, empty blocks.
    ``mlflow_tracking_uri``: the project's MLflow service (``discovery.mlflow.trackingUri``;
    without one, the region's ``customValues.mlflowTrackingUri``)."""
    region = region or RegionContext()
    rng = rng or secrets.SystemRandom()
    git = git or GitContext(name=user.name or user.idep, email=user.email)
    k8s = region.kubernetes
    one_time_password = "".join(rng.choice(_PASSWORD_ALPHABET) for _ in range(20))
    random_subdomain = "".join(rng.choice(_SUBDOMAIN_ALPHABET) for _ in range(7))
    basic = base64.b64encode(f"{project.id}:{project.password}".encode()).decode()
    return {
        "user": {
            "idep": user.idep,
            "name": user.name or user.idep,
            "email": user.email,
            "password": project.password,
            "ip": user.ip,
            "darkMode": user.dark_mode,
            "lang": user.lang,
            "decodedIdToken": dict(user.decoded_id_token),
            "accessToken": user.access_token,
            "refreshToken": user.refresh_token,
        },
        "service": {"oneTimePassword": one_time_password},
        "project": {"id": project.id, "password": project.password, "basic": basic},
        "git": {
            "name": git.name,
            "email": git.email,
            "credentials_cache_duration": git.credentials_cache_duration,
            "token": git.token,
            "project": git.project,
        },
        "vault": _vault_block(vault),
        "s3": _s3_block(s3),
        "region": {
            "id": region.id,  # datalab addition
            "defaultIpProtection": region.default_ip_protection,
            "defaultNetworkPolicy": region.default_network_policy,
            "allowedURIPattern": region.allowed_uri_pattern,
            "customValues": dict(region.custom_values),
            "kafka": None,
            "tolerations": list(region.tolerations),
            "from": list(region.network_policy_from),
            "nodeSelector": dict(region.node_selector),
            "startupProbe": dict(region.startup_probe) or None,
            "sliders": {k: dict(v) for k, v in region.sliders.items()},
            "resources": dict(region.resources),
            "openshiftSCC": dict(region.openshift_scc) if region.openshift_scc else None,
        },
        "k8s": {
            "domain": k8s.domain,
            "ingressClassName": k8s.ingress_class_name,
            "ingress": k8s.ingress,
            "route": k8s.route,
            "istio": {"enabled": k8s.istio_enabled, "gateways": list(k8s.istio_gateways)},
            "randomSubdomain": random_subdomain,
            "initScriptUrl": k8s.init_script_url,
            "initScriptCheckSum": k8s.init_script_checksum,
            "useCertManager": k8s.use_cert_manager,
            "certManagerClusterIssuer": k8s.cert_manager_cluster_issuer,
        },
        "proxyInjection": {
            "enabled": bool(region.http_proxy or region.https_proxy),  # datalab addition
            "httpProxyUrl": region.http_proxy,
            "httpsProxyUrl": region.https_proxy,
            "noProxy": region.no_proxy,
        },
        "packageRepositoryInjection": {
            "cranProxyUrl": region.cran_proxy_url,
            "condaProxyUrl": region.conda_proxy_url,
            "packageManagerUrl": region.package_manager_url,
            "pypiProxyUrl": region.pypi_proxy_url,
        },
        "certificateAuthorityInjection": {
            "cacerts": region.ca_certs,
            "pathToCaBundle": region.path_to_ca_bundle,
        },
        # datalab addition: services of the project other services find (Onyxia charts do it
        # with Helm lookups of labelled secrets, which a local process cannot)
        # (the project's MLflow service, else the region's customValues.mlflowTrackingUri)
        "discovery": {
            "mlflow": {
                "trackingUri": mlflow_tracking_uri
                or str(region.custom_values.get("mlflowTrackingUri") or "")
            }
        },
    }


def _s3_block(s3: S3Context | None) -> dict[str, Any]:
    if s3 is None:
        return {
            "isEnabled": False,
            "AWS_ACCESS_KEY_ID": "",
            "AWS_SECRET_ACCESS_KEY": "",
            "AWS_SESSION_TOKEN": "",
            "AWS_DEFAULT_REGION": "",
            "AWS_S3_ENDPOINT": "",
            "AWS_BUCKET_NAME": "",
            "port": 0,
            "pathStyleAccess": False,
            "objectNamePrefix": "",
            "workingDirectoryPath": "",
            "isAnonymous": False,
            "url": "",
            "credentialsUrl": "",
            "credentialsAuthorization": "",
        }
    parsed = urlparse(s3.endpoint_url)
    secure = parsed.scheme == "https"
    anonymous = s3.is_anonymous
    return {
        "isEnabled": True,
        "AWS_ACCESS_KEY_ID": "" if anonymous else s3.access_key_id,
        "AWS_SECRET_ACCESS_KEY": "" if anonymous else s3.secret_access_key,
        "AWS_SESSION_TOKEN": "" if anonymous else s3.session_token,
        "AWS_DEFAULT_REGION": s3.region,
        # Onyxia gives the host alone (charts prepend https://) and the port apart
        "AWS_S3_ENDPOINT": parsed.hostname or "",
        "AWS_BUCKET_NAME": s3.bucket,
        "port": parsed.port or (443 if secure else 80),
        "pathStyleAccess": s3.path_style_access,
        "objectNamePrefix": s3.object_name_prefix,
        "workingDirectoryPath": f"{s3.bucket}/{s3.object_name_prefix}".rstrip("/")
        + ("/" if s3.bucket else ""),
        "isAnonymous": anonymous,
        # datalab addition: the full endpoint URL (scheme and port), for local http endpoints
        "url": s3.endpoint_url.rstrip("/"),
        # datalab additions: where the AWS SDKs renew the session (container credentials)
        "credentialsUrl": "" if anonymous else s3.credentials_url,
        "credentialsAuthorization": "" if anonymous else s3.credentials_authorization,
    }


def _vault_block(vault: VaultContext | None) -> dict[str, Any]:
    if vault is None:
        return {
            "isEnabled": False,  # datalab addition
            "VAULT_ADDR": "",
            "VAULT_TOKEN": "",
            "VAULT_MOUNT": "",
            "VAULT_TOP_DIR": "",
        }
    return {
        "isEnabled": True,
        "VAULT_ADDR": vault.address.rstrip("/"),
        "VAULT_TOKEN": vault.token,
        "VAULT_MOUNT": vault.mount,
        "VAULT_TOP_DIR": vault.top_dir,
    }


def chosen_secret_paths(text: str) -> list[str]:
    """The secret paths of a ``vault.secret`` value: comma-separated, as the secrets API
    lists them (``user-alice/db, project-team/api``)."""
    return [path.strip().strip("/") for path in text.split(",") if path.strip().strip("/")]
