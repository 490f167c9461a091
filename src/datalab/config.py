"""Settings: one YAML file plus environment overrides, validated by a typed model.

Sources, lowest to highest precedence: defaults < ``datalab.yaml`` < ``DATALAB_*`` environment
variables (nested keys joined with ``__``, e.g. ``DATALAB_SERVER__PORT=9000``). The file is found
from ``--config``, else ``$DATALAB_CONFIG``, else ``./datalab.yaml`` when present.

``datalab config schema`` prints the JSON schema of this model; ``docs/configuration.md`` documents
every key (a test checks that the document and the model agree).
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from datalab.catalog import SHIPPED_CATALOG_DIR, CatalogConfig, load_catalog_file
from datalab.errors import ConfigError
from datalab.onyxia_context import KubernetesContext, RegionContext

#: the path under the platform's URL where programs reach services with a token (the
#: gateway serves it; a service's internal URL is under it)
SERVICES_PATH = "/s"


def internal_service_url(platform_url: str, service_id: str) -> str:
    """Where programs reach a service with a token: ``<platform URL>/s/<id>/``."""
    return f"{platform_url.rstrip('/')}{SERVICES_PATH}/{service_id}/"


#: the entry-point group that declares execution backends (:mod:`datalab.backends` loads them)
BACKENDS_GROUP = "datalab.backends"


def backend_names() -> list[str]:
    """The names of the installed execution backends (``backend.name`` must be one)."""
    return sorted({entry.name for entry in entry_points(group=BACKENDS_GROUP)})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="Interface the platform listens on.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port the platform listens on.")
    public_url: str | None = Field(
        None,
        description="URL users reach the platform at (default: http://HOST:PORT). Used in links "
        "and service URLs.",
    )
    max_request_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Largest accepted API request body (bytes)."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Reverse proxies in front of the platform (IP addresses or CIDR networks): "
        "only requests from them may set the client address (X-Forwarded-For) and scheme "
        "(X-Forwarded-Proto). Empty: forwarded headers are ignored, the client is the TCP peer.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _are_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or CIDR network (e.g. 10.0.0.5, 10.0.0.0/8)"
                ) from None
        return value

    def url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


class Quota(_Section):
    max_services: int | None = Field(None, ge=0, description="Services at once (None: no limit).")
    cpu: float | None = Field(None, ge=0, description="Sum of CPU limits, in cores.")
    memory_mb: int | None = Field(None, ge=0, description="Sum of memory limits, in MiB.")


class ResourceMaximum(_Section):
    cpu: float = Field(8, gt=0, description="Largest CPU limit of one service, in cores.")
    memory_mb: int = Field(32768, gt=0, description="Largest memory limit of one service, in MiB.")


class Slider(_Section):
    """One of Onyxia's region sliders (``defaultConfiguration.sliders``): the range a chart's
    slider with ``x-onyxia.useRegionSliderConfig`` offers."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    slider_min: int | float = Field(alias="sliderMin", description="Smallest value.")
    slider_max: int | float = Field(alias="sliderMax", description="Largest value.")
    slider_step: int | float = Field(1, gt=0, alias="sliderStep", description="Step.")
    slider_unit: str = Field("", alias="sliderUnit", description="Unit, e.g. m, Gi.")

    @model_validator(mode="after")
    def _ordered(self) -> Slider:
        if self.slider_min > self.slider_max:
            raise ValueError("sliderMin is larger than sliderMax")
        return self


class OpenshiftScc(_Section):
    """Onyxia's ``services.openshiftSCC``: the SecurityContextConstraints services run under."""

    enabled: bool = Field(False, description="Bind services to the SCC below (OpenShift).")
    scc: str = Field("", description="Name of the SecurityContextConstraints.")


class PackageRepositories(_Section):
    """Onyxia's ``packageRepositoryInjection``: package mirrors services install from."""

    cran_proxy_url: str = Field("", description="CRAN mirror (cranProxyUrl).")
    conda_proxy_url: str = Field("", description="Conda channel mirror (condaProxyUrl).")
    package_manager_url: str = Field(
        "", description="Posit Package Manager URL (packageManagerUrl)."
    )
    pypi_proxy_url: str = Field("", description="PyPI mirror (pypiProxyUrl).")


class ProxyInjection(_Section):
    """Onyxia's ``proxyInjection``: the enterprise proxy services use."""

    http_proxy_url: str = Field("", description="HTTP proxy (httpProxyUrl).")
    https_proxy_url: str = Field("", description="HTTPS proxy (httpsProxyUrl).")
    no_proxy: str = Field("", description="Hosts reached without the proxy, comma-separated.")


class CertificateAuthorities(_Section):
    """Onyxia's ``certificateAuthorityInjection``: private CAs services trust."""

    cacerts: str = Field("", description="PEM certificates, concatenated then base64-encoded.")
    path_to_ca_bundle: str = Field(
        "", description="Where a CA bundle is mounted in services (pathToCaBundle)."
    )


_RESOURCE_KEYS = ("cpuRequest", "cpuLimit", "memoryRequest", "memoryLimit", "disk", "gpu")
_STARTUP_PROBE_KEYS = (
    "failureThreshold",
    "initialDelaySeconds",
    "periodSeconds",
    "successThreshold",
    "timeoutSeconds",
)


def _known_keys(value: dict[str, Any], known: tuple[str, ...]) -> None:
    """Refuse keys of a settings mapping outside ``known`` (a pydantic validation error)."""
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}: use {', '.join(known)}")


class RegionSettings(_Section):
    """In the spirit of Onyxia's region configuration. The settings injected into services
    (``region.*``, ``k8s.*``, ``*Injection``) carry the names Onyxia's context gives them, in
    snake_case, and Onyxia's defaults (docs/configuration.md names Onyxia's key of each)."""

    id: str = Field("local", description="Region id, shown to users and injected as region.*.")
    name: str = Field("This machine", description="Region display name.")
    user_prefix: str = Field("user-", description="Prefix of personal project ids (user-alice).")
    project_prefix: str = Field("project-", description="Prefix of shared project ids.")
    domain: str = Field(
        "localhost",
        description="Each service has its own origin, <service-id>.<domain> with the platform's "
        "scheme and port (k8s.domain); localhost works on one machine (browsers resolve "
        "*.localhost to loopback), production needs a wildcard DNS name.",
    )
    default_resources: dict[str, str] = Field(
        default_factory=lambda: {
            "cpuRequest": "100m",
            "cpuLimit": "2",
            "memoryRequest": "512Mi",
            "memoryLimit": "4Gi",
        },
        description="Default resources injected as region.resources (Onyxia's keys cpuRequest, "
        "cpuLimit, memoryRequest, memoryLimit, and disk (a volume's size, e.g. 10Gi) and gpu "
        "(a number of GPUs), which charts read when given). cpuLimit and memoryLimit are also "
        "the limits of a service whose values set none.",
    )
    max_resources: ResourceMaximum = Field(
        default_factory=ResourceMaximum,
        description="Largest limits one service may have (a launch asking more is refused).",
    )
    # the defaults hold four services with the default limits: the README's Jupyter + MLflow +
    # Jupyter, and one more
    user_quota: Quota = Field(
        default_factory=lambda: Quota(max_services=10, cpu=8, memory_mb=16384),
        description="Per-user quota (all of a user's services in their personal project), "
        "counted on the services' limits.",
    )
    project_quota: Quota = Field(
        default_factory=lambda: Quota(max_services=20, cpu=16, memory_mb=32768),
        description="Per-project quota (all services of a shared project), counted on the "
        "services' limits.",
    )
    allowed_init_script_pattern: str = Field(
        r"^https://.*$", description="Regex init-script URLs must match (region.allowedURIPattern)."
    )
    custom_values: dict[str, Any] = Field(
        default_factory=dict, description="Free values injected as region.customValues."
    )
    # -- Onyxia's services.defaultConfiguration: injected as region.*
    default_ip_protection: bool = Field(
        False,
        description="Services accept only their user's IP address by default "
        "(region.defaultIpProtection; Onyxia: defaultConfiguration.ipprotection).",
    )
    default_network_policy: bool = Field(
        False,
        description="Services get a NetworkPolicy by default (region.defaultNetworkPolicy; "
        "Onyxia: defaultConfiguration.networkPolicy).",
    )
    network_policy_from: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Extra sources the services' NetworkPolicies let in, as Kubernetes "
        "NetworkPolicyPeers (region.from; Onyxia: defaultConfiguration.from).",
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Kubernetes tolerations of services' pods (region.tolerations).",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels services' pods must run on (region.nodeSelector).",
    )
    startup_probe: dict[str, int] = Field(
        default_factory=dict,
        description="Startup probe of services' main container: failureThreshold, "
        "initialDelaySeconds, periodSeconds, successThreshold, timeoutSeconds "
        "(region.startupProbe; empty: the charts' own).",
    )
    sliders: dict[str, Slider] = Field(
        default_factory=dict,
        description="Ranges of the launcher's sliders, by name (cpu, memory, disk, gpu...): "
        "{sliderMin, sliderMax, sliderStep, sliderUnit} (region.sliders).",
    )
    openshift_scc: OpenshiftScc = Field(
        default_factory=OpenshiftScc,
        description="OpenShift SecurityContextConstraints (region.openshiftSCC).",
    )
    # -- Onyxia's services.expose and services.initScript: injected as k8s.*
    ingress_class_name: str = Field(
        "", description="Ingress class of services' Ingresses (k8s.ingressClassName)."
    )
    ingress: bool = Field(True, description="Services are exposed with an Ingress (k8s.ingress).")
    route: bool = Field(
        False, description="Services are exposed with an OpenShift Route (k8s.route)."
    )
    istio_enabled: bool = Field(
        False, description="Services are exposed through Istio (k8s.istio.enabled)."
    )
    istio_gateways: list[str] = Field(
        default_factory=list, description="Istio gateways, e.g. istio-system/gw (k8s.istio)."
    )
    use_cert_manager: bool = Field(
        False,
        description="Ingress certificates are issued by cert-manager (k8s.useCertManager; "
        "Onyxia: expose.certManager.useCertManager).",
    )
    cert_manager_cluster_issuer: str = Field(
        "",
        description="cert-manager ClusterIssuer of those certificates "
        "(k8s.certManagerClusterIssuer).",
    )
    init_script_url: str = Field(
        "",
        description="Script every service runs at start (k8s.initScriptUrl; Onyxia: "
        "services.initScript), e.g. https://inseefrlab.github.io/onyxia/onyxia-init.sh.",
    )
    init_script_checksum: str = Field(
        "",
        description="Checksum services verify the init script against (k8s.initScriptCheckSum, "
        "which Onyxia's charts read).",
    )
    # -- injected as they are in Onyxia
    package_repository_injection: PackageRepositories = Field(
        default_factory=PackageRepositories,
        description="Package mirrors (packageRepositoryInjection.*).",
    )
    proxy_injection: ProxyInjection = Field(
        default_factory=ProxyInjection, description="Enterprise proxy (proxyInjection.*)."
    )
    certificate_authority_injection: CertificateAuthorities = Field(
        default_factory=CertificateAuthorities,
        description="Private certificate authorities (certificateAuthorityInjection.*).",
    )

    @field_validator("default_resources")
    @classmethod
    def _quantities(cls, value: dict[str, str]) -> dict[str, str]:
        from datalab.errors import BackendError
        from datalab.resources import parse_cpu, parse_memory_bytes

        _known_keys(value, _RESOURCE_KEYS)
        parsers = {
            "cpuRequest": parse_cpu,
            "cpuLimit": parse_cpu,
            "memoryRequest": parse_memory_bytes,
            "memoryLimit": parse_memory_bytes,
            "disk": parse_memory_bytes,
        }
        for key, parse in parsers.items():
            if value.get(key):
                try:
                    parse(value[key], key=key)
                except BackendError as exc:
                    raise ValueError(str(exc)) from None
        gpu = value.get("gpu")
        if gpu and not str(gpu).isdigit():
            raise ValueError(f"gpu must be a whole number of GPUs, got {gpu!r}")
        return value

    @field_validator("startup_probe")
    @classmethod
    def _probe_keys(cls, value: dict[str, int]) -> dict[str, int]:
        _known_keys(value, _STARTUP_PROBE_KEYS)
        return value

    def context(self) -> RegionContext:
        """The region as the injection context sees it (``region.*``, ``k8s.*``...)."""
        packages = self.package_repository_injection
        proxy = self.proxy_injection
        return RegionContext(
            id=self.id,
            default_ip_protection=self.default_ip_protection,
            default_network_policy=self.default_network_policy,
            allowed_uri_pattern=self.allowed_init_script_pattern,
            custom_values=self.custom_values,
            tolerations=self.tolerations,
            network_policy_from=self.network_policy_from,
            node_selector=self.node_selector,
            startup_probe=self.startup_probe,
            sliders={
                name: slider.model_dump(by_alias=True) for name, slider in self.sliders.items()
            },
            resources=self.default_resources,
            openshift_scc=self.openshift_scc.model_dump(),
            kubernetes=KubernetesContext(
                domain=self.domain,
                ingress_class_name=self.ingress_class_name,
                ingress=self.ingress,
                route=self.route,
                istio_enabled=self.istio_enabled,
                istio_gateways=tuple(self.istio_gateways),
                init_script_url=self.init_script_url,
                init_script_checksum=self.init_script_checksum,
                use_cert_manager=self.use_cert_manager,
                cert_manager_cluster_issuer=self.cert_manager_cluster_issuer,
            ),
            http_proxy=proxy.http_proxy_url,
            https_proxy=proxy.https_proxy_url,
            no_proxy=proxy.no_proxy,
            pypi_proxy_url=packages.pypi_proxy_url,
            conda_proxy_url=packages.conda_proxy_url,
            cran_proxy_url=packages.cran_proxy_url,
            package_manager_url=packages.package_manager_url,
            ca_certs=self.certificate_authority_injection.cacerts,
            path_to_ca_bundle=self.certificate_authority_injection.path_to_ca_bundle,
        )

    @model_validator(mode="after")
    def _default_limits_within_maximum(self) -> RegionSettings:
        from datalab.resources import MIB, parse_cpu, parse_memory_bytes

        cpu = self.default_resources.get("cpuLimit")
        memory = self.default_resources.get("memoryLimit")
        if cpu and parse_cpu(cpu) > self.max_resources.cpu:
            raise ValueError("default_resources.cpuLimit is larger than max_resources.cpu")
        if memory and parse_memory_bytes(memory) > self.max_resources.memory_mb * MIB:
            raise ValueError("default_resources.memoryLimit is larger than max_resources.memory_mb")
        return self

    @field_validator("user_prefix", "project_prefix")
    @classmethod
    def _prefix_is_dns_label(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]*)?", value):
            raise ValueError("must be lowercase letters, digits and '-' (it starts project ids)")
        return value


class SecuritySettings(_Section):
    session_secret: SecretStr | None = Field(
        None,
        description="Key signing session cookies. Default: generated once and kept in the data "
        "directory (mode 0600).",
    )
    session_max_age_s: int = Field(8 * 3600, ge=60, description="Web session lifetime (seconds).")
    secure_cookies: bool | None = Field(
        None, description="Set the Secure cookie flag (default: when public_url is https)."
    )
    login_max_failures: int = Field(
        5, ge=1, description="Failed logins per account and client before logins are refused."
    )
    login_lockout_s: int = Field(
        900, ge=1, description="Window and lock-out period for failed logins (seconds)."
    )
    token_default_ttl_days: int | None = Field(
        90, ge=1, description="Default lifetime of new API tokens (None: no expiry)."
    )


_URL = r"^https?://[^\s\"'<>/]+(/[^\s\"'<>]*)?$"


class ServiceUrls(_Section):
    """Where services reach the platform's endpoints when that is not where the platform
    reaches them (in a cluster, pods cannot reach the platform's loopback): each is injected
    into services in place of the platform's own address."""

    s3: str | None = Field(
        None,
        pattern=_URL,
        description="The S3 endpoint pods reach (e.g. http://seaweedfs.datalab.svc:8333; "
        "default: storage's endpoint, when it is not on loopback).",
    )
    vault: str | None = Field(
        None,
        pattern=_URL,
        description="The Vault/OpenBao address pods reach (default: the secrets store's "
        "address, when it is not on loopback).",
    )
    platform: str | None = Field(
        None,
        pattern=_URL,
        description="The platform's URL pods reach, for credential refreshes (e.g. "
        "http://datalab.datalab.svc:8000; default: server.public_url, when not on loopback).",
    )


class KubernetesSettings(_Section):
    """The cluster the kubernetes backend runs services in (docs/kubernetes.md)."""

    kubeconfig: Path | None = Field(
        None,
        description="Kubeconfig file of the platform's identity in the cluster (None: the "
        "in-cluster service account, when the platform runs in a pod).",
    )
    context: str | None = Field(None, description="Context of the kubeconfig to use.")
    access: Literal["proxy", "ingress"] = Field(
        "proxy",
        description="How users reach services: through the platform's gateway to the "
        "release's Service (proxy), or through the chart's own Ingress (ingress).",
    )
    platform_namespace: str = Field(
        "datalab",
        description="Namespace the platform runs in: projects' NetworkPolicies let it in.",
    )
    ingress_namespace: str | None = Field(
        "ingress-nginx",
        description="Namespace of the ingress controller: projects' NetworkPolicies let it in.",
    )
    rbac_user_prefix: str = Field(
        "",
        description="How the cluster names users in RoleBindings: the prefix its OIDC "
        "authenticator adds to their name (e.g. 'oidc:').",
    )
    service_urls: ServiceUrls = Field(default_factory=ServiceUrls)
    image_pull_secrets: list[str] = Field(
        default_factory=list,
        description="Registry Secrets (kubernetes.io/dockerconfigjson) in the platform's "
        "namespace that services pull their images with: copied into each project's namespace "
        "and named by its default ServiceAccount.",
    )


class BackendSettings(_Section):
    name: str = Field(
        "local",
        description="Execution backend, by the name of its datalab.backends entry point: local "
        "(services as processes here, the default), kubernetes (Helm releases in a cluster), "
        "memory (runs nothing: tests and demos).",
    )
    stop_services_on_shutdown: bool = Field(
        True,
        description="Stop every service when the platform stops (True) or leave them running and "
        "re-attach at the next start (False).",
    )
    env_build_timeout_s: int = Field(900, ge=10, description="Limit for building a service env.")
    readiness_timeout_s: int | None = Field(
        None, ge=1, description="Override of recipes' readiness timeouts."
    )
    maven_repository: str | None = Field(
        None,
        pattern=r"^https?://",
        description="A Maven repository (its root URL) to download local recipes' "
        "environment.jars from, e.g. a mirror on a closed network; jars are checked against "
        "the SHA-1 it publishes and cached in $XDG_CACHE_HOME/datalab/maven. None: Maven "
        "(mvn) fetches them, as this machine's Maven is configured (~/.m2).",
    )
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)

    @field_validator("name")
    @classmethod
    def _installed(cls, value: str) -> str:
        installed = backend_names()
        if value not in installed:
            raise ValueError(f"no backend {value!r} is installed; choose {' or '.join(installed)}")
        return value


_COLOUR = r"^#[0-9a-fA-F]{6}$"
_LINK = r"^(https?://|/)[^\s\"'<>]*$"


class FooterLink(_Section):
    label: str = Field(max_length=100, description="Text of the link.")
    url: str = Field(pattern=_LINK, description="http(s):// URL or a path on this site.")


class BrandingSettings(_Section):
    """How the web UI presents this instance."""

    name: str | None = Field(None, description="Name in the header (default: instance_name).")
    logo_url: str = Field(
        "/static/logo.svg", pattern=_LINK, description="Logo in the header (URL or path)."
    )
    primary_colour: str = Field(
        "#1f4e79", pattern=_COLOUR, description="Main colour (#rrggbb): header, buttons."
    )
    accent_colour: str = Field(
        "#b8860b", pattern=_COLOUR, description="Accent colour (#rrggbb): highlighted charts."
    )
    footer_links: list[FooterLink] = Field(
        default_factory=list, description="Links in the footer: [{label, url}]."
    )
    terms_url: str | None = Field(
        None, pattern=_LINK, description="Terms of service, linked from the footer and login."
    )
    long_running_warning_h: float = Field(
        24, gt=0, description="Warn on My services about services running longer (hours)."
    )
    oidc_provider_name: str | None = Field(
        None,
        max_length=100,
        description="Provider name on the 'Sign in with ...' button when oidc is enabled "
        "(default: the issuer's host).",
    )


class StorageSettings(_Section):
    """Object storage (S3): embedded SeaweedFS, an external S3, or none."""

    mode: Literal["embedded", "external", "disabled"] = Field(
        "embedded",
        description="embedded: SeaweedFS supervised by the platform; external: the S3 at "
        "endpoint_url; disabled: no object storage (nothing injected).",
    )
    endpoint_url: str | None = Field(
        None, description="External S3 endpoint (mode external), e.g. https://minio.example.org."
    )
    public_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s\"'<>]+$",
        description="The S3 endpoint users and their browsers reach, where share links "
        "(presigned URLs) point, e.g. https://s3.example.org when the platform reaches S3 at an "
        "internal address (default: the endpoint itself, external or embedded).",
    )
    access_key_id: str | None = Field(
        None, description="External S3 admin access key (mode external): creates buckets."
    )
    secret_access_key: SecretStr | None = Field(
        None, description="External S3 admin secret key (mode external)."
    )
    sts_role_arn: str | None = Field(
        None,
        description="Role assumed with the platform's tokens (AssumeRoleWithWebIdentity) on an "
        "external S3; without it services get the static credentials above (single-tenant only).",
    )
    web_identity: Literal["platform", "oidc"] = Field(
        "platform",
        description="Token given to the STS of an external S3: the platform's own JWT, or the "
        "user's ID token from the identity provider (oidc), when that STS trusts the provider "
        "rather than the platform (as MinIO trusts Keycloak in Onyxia's deployments).",
    )
    bucket_mode: Literal["bucket", "prefix"] = Field(
        "bucket",
        description="As Onyxia's bucketMode: bucket = one bucket per project (user-alice); "
        "prefix = one shared bucket, one prefix per project (shared_bucket/user-alice/).",
    )
    shared_bucket: str = Field(
        "datalab", description="The bucket holding every project's prefix (bucket_mode prefix)."
    )
    region: str = Field("us-east-1", description="S3 region injected as AWS_DEFAULT_REGION.")
    port: int | None = Field(
        None, ge=1, le=65535, description="Embedded S3 port (default: a free port, kept)."
    )
    listen_address: IPvAnyAddress = Field(
        IPv4Address("127.0.0.1"),
        description="Address the embedded S3 listens on (its other components stay on loopback): "
        "loopback on one machine; 0.0.0.0 in the platform's pod on Kubernetes, where users' pods "
        "reach it through the platform's Service (deploy/helm/datalab, storage.mode embedded).",
    )
    credentials_ttl_s: int = Field(
        3600,
        ge=900,
        le=43200,
        description="Lifetime of per-user S3 session credentials (STS allows 900 to 43200 s).",
    )
    max_upload_bytes: int = Field(
        5 * 1024**3, ge=1, description="Largest object accepted by the storage API (bytes)."
    )


class SecretsSettings(_Section):
    """Secrets (Vault API): embedded OpenBao, an external Vault/OpenBao, or none."""

    mode: Literal["embedded", "external", "disabled"] = Field(
        "embedded",
        description="embedded: OpenBao supervised by the platform; external: the Vault at "
        "address; disabled: no secrets store.",
    )
    address: str | None = Field(None, description="External Vault/OpenBao URL (mode external).")
    token: SecretStr | None = Field(
        None,
        description="External Vault token able to configure the KV mount, JWT auth and policies "
        "(mode external).",
    )
    mount: str = Field("onyxia-kv", description="KV v2 mount holding user and project secrets.")
    port: int | None = Field(
        None, ge=1, le=65535, description="Embedded OpenBao port (default: a free port, kept)."
    )
    listen_address: IPvAnyAddress = Field(
        IPv4Address("127.0.0.1"),
        description="Address the embedded OpenBao's API listens on (raft's own port stays on "
        "loopback): loopback on one machine; 0.0.0.0 in the platform's pod on Kubernetes.",
    )
    token_ttl_s: int = Field(
        3600, ge=5, description="Lifetime of per-user Vault tokens (renewable up to 24 h)."
    )
    web_identity: Literal["platform", "oidc"] = Field(
        "platform",
        description="Token users log in to an external Vault with: the platform's own JWT (JWT "
        "auth the platform configures), or the user's ID token from the identity provider "
        "(oidc), at the JWT auth mount and role below that the Vault's admins configured.",
    )
    oidc_auth_mount: str = Field(
        "jwt", description="Vault JWT auth mount trusting the identity provider (oidc)."
    )
    oidc_role: str = Field(
        "onyxia-user", description="Role of that mount users log in with (oidc)."
    )


class OidcSettings(_Section):
    """Sign-in with an external OpenID Connect provider (authorization code + PKCE)."""

    enabled: bool = Field(False, description="Offer sign-in with the provider below.")
    issuer_url: str | None = Field(
        None, description="Provider issuer URL (its /.well-known/openid-configuration is read)."
    )
    client_id: str | None = Field(None, description="This platform's client id at the provider.")
    client_secret: SecretStr | None = Field(
        None, description="Client secret (None for a public client: PKCE only)."
    )
    scopes: str = Field("openid profile email", description="Scopes requested at sign-in.")
    audience: str | None = Field(
        None, description="Expected ID token audience (default: client_id)."
    )
    username_claim: str = Field(
        "preferred_username", description="Claim holding the user name (Onyxia's idep)."
    )
    groups_claim: str = Field("groups", description="Claim listing the user's groups.")
    group_include: list[str] = Field(
        default_factory=lambda: [".*"],
        description="Regexes: only groups matching one of them become projects.",
    )
    group_exclude: list[str] = Field(
        default_factory=list, description="Regexes: groups matching one of them are ignored."
    )
    group_pattern: str = Field(
        "^/?(.*)$", description="Regex applied to a group name to make its project name."
    )
    group_replacement: str = Field(
        "\\1", description="Replacement for group_pattern (re.sub syntax), e.g. \\1."
    )
    admin_groups: list[str] = Field(
        default_factory=list, description="Members of these groups are platform administrators."
    )


class Settings(BaseSettings):
    """The whole platform configuration (``datalab.yaml``)."""

    model_config = SettingsConfigDict(
        env_prefix="DATALAB_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("datalab")),
        description="Directory for the database, keys, logs and service work dirs.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL (sqlite:///... or postgresql+psycopg://...). Default: SQLite "
        "in the data directory.",
    )
    instance_name: str = Field("datalab", description="Name shown to users.")
    server: ServerSettings = Field(default_factory=ServerSettings)
    region: RegionSettings = Field(default_factory=RegionSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    backend: BackendSettings = Field(default_factory=BackendSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    branding: BrandingSettings = Field(default_factory=BrandingSettings)
    catalogs: list[CatalogConfig] = Field(
        default_factory=lambda: load_catalog_file(SHIPPED_CATALOG_DIR / "catalog.yaml"),
        description="Catalog sources (chart directories or Helm repositories). Default: the "
        "catalog shipped in catalog/.",
    )
    schema_dirs: list[Path] = Field(
        default_factory=list,
        description="Extra directories of x-onyxia schema fragments, overriding the shipped ones.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info")

    @model_validator(mode="after")
    def _federation_needs_a_provider(self) -> Settings:
        """The provider's tokens can only be handed to servers the platform does not run."""
        for name, section in (("storage", self.storage), ("secrets", self.secrets)):
            if section.web_identity != "oidc":
                continue
            if not self.oidc.enabled:
                raise ValueError(f"{name}.web_identity is 'oidc' but oidc.enabled is false")
            if section.mode != "external":
                raise ValueError(
                    f"{name}.web_identity 'oidc' needs {name}.mode 'external': the embedded "
                    "servers trust the platform's tokens"
                )
        if self.storage.web_identity == "oidc" and not self.storage.sts_role_arn:
            raise ValueError("storage.web_identity is 'oidc' but storage.sts_role_arn is not set")
        return self

    @property
    def federated(self) -> bool:
        """Whether S3 or Vault take the identity provider's tokens (kept at sign-in)."""
        return "oidc" in (self.storage.web_identity, self.secrets.web_identity)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # environment beats the file (passed as init kwargs by load_settings)
        return (env_settings, init_settings)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'datalab.db'}"

    @property
    def secure_cookies(self) -> bool:
        """Whether cookies get the Secure flag: as configured, else when the platform is
        reached over https."""
        configured = self.security.secure_cookies
        return self.server.url().startswith("https://") if configured is None else configured

    def internal_service_url(self, service_id: str) -> str:
        """Where programs (the project's other services) reach a service with a token."""
        return internal_service_url(self.server.url(), service_id)

    def service_url(self, service_id: str) -> str:
        """A service's own origin, where users open it: ``<id>.<region.domain>`` with the
        scheme and port of the platform's URL (``http://nb.localhost:8000/``)."""
        parts = urlsplit(self.server.url())
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{service_id}.{self.region.domain.strip('.')}{port}/"

    def masked_database_url(self) -> str:
        """The database's URL with its password replaced (for messages and logs)."""
        return mask_url_password(self.db_url)

    def masked(self) -> dict[str, Any]:
        """The effective configuration as JSON, secrets replaced by ``********``."""
        data = self.model_dump(mode="json")
        if self.database_url:
            data["database_url"] = mask_url_password(self.database_url)
        return data


def mask_url_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "********"


def find_config_file(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    if explicit:
        return Path(explicit)
    if env := os.environ.get("DATALAB_CONFIG"):
        return Path(env)
    default = Path("datalab.yaml")
    return default if default.exists() else None


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Load and validate settings; raise :class:`ConfigError` naming the key and the problem."""
    file = find_config_file(path)
    data: dict[str, Any] = {}
    if file is not None:
        try:
            text = file.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file} must contain a mapping of settings, not {type(loaded)}")
        data = loaded
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, file)) from None


def _describe(exc: ValidationError, file: Path | None) -> str:
    where = f" in {file}" if file else ""
    lines = [f"invalid configuration{where}:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting (see docs/configuration.md for the valid keys)"
        value = error.get("input")
        shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
        lines.append(f"  {key}: {message}{shown}")
    return "\n".join(lines)
