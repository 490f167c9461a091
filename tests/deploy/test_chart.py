"""The platform's chart (deploy/helm/datalab) rendered with helm-python-sdk: it lints, its objects
are valid Kubernetes objects, its ClusterRole is the tested one, its values schema refuses bad
values naming the key, and the configuration it makes is one the platform's loader accepts."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from datalab.config import (
    KubernetesSettings,
    SecretsSettings,
    Settings,
    StorageSettings,
)
from datalab.errors import ConfigError

from .chart import (
    CHART,
    KUBERNETES,
    PLATFORM_RBAC,
    PRODUCTION_SECRETS,
    merged,
    one,
    platform_container,
    production_values,
    render,
    settings_in_pod,
)


def _secret(name: str, key: str) -> str:
    return PRODUCTION_SECRETS[name][key]


@pytest.mark.parametrize("which", ["defaults", "production"])
def test_the_chart_lints_strictly(which: str) -> None:
    values = production_values() if which == "production" else None
    report = helm_python.lint(
        CHART, values, strict=True, namespace="datalab", kube_version=f"v{KUBERNETES}"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("which", ["defaults", "production", "sqlite-on-a-claim"])
def test_every_object_is_valid_for_the_kubernetes_api(which: str) -> None:
    values = {
        "defaults": None,
        "production": production_values(),
        "sqlite-on-a-claim": {
            "persistence": {"existingClaim": "datalab-data"},
            "ingress": {"enabled": False},
        },
    }[which]
    objects = render(values)
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)
    kinds = sorted(o["kind"] for o in objects)
    expected = {"ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Job",
                "NetworkPolicy", "PodDisruptionBudget", "Service", "ServiceAccount"}  # fmt: skip
    assert expected <= set(kinds)
    assert ("PersistentVolumeClaim" in kinds) is (which != "sqlite-on-a-claim")
    assert ("Ingress" in kinds) is (which != "sqlite-on-a-claim")


def test_the_cluster_role_is_the_tested_one() -> None:
    """One set of rules: the chart's ClusterRole grants exactly what deploy/kubernetes/
    platform-rbac.yaml grants, which tests/datalab/backends/test_kubernetes_rbac.py runs the
    backend under on the control plane."""
    shipped = one(list(yaml.safe_load_all(PLATFORM_RBAC.read_text())), "ClusterRole")
    charted = one(render(None), "ClusterRole")
    assert charted["rules"] == shipped["rules"]
    binding = one(render(None, name="platform", namespace="ops"), "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "platform-datalab", "namespace": "ops"}
    ]
    assert binding["roleRef"]["name"] == "platform-datalab"


def test_probes_service_and_hosts() -> None:
    objects = render(production_values())
    container = platform_container(objects)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/api/health", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    ingress = one(objects, "Ingress")
    hosts = [rule["host"] for rule in ingress["spec"]["rules"]]
    assert hosts == ["datalab.example.org", "*.datalab.example.org"]
    assert ingress["spec"]["tls"] == [{"secretName": "datalab-tls", "hosts": hosts}]
    policy = one(objects, "NetworkPolicy")
    [rule] = policy["spec"]["ingress"]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    } in rule["from"]
    # the projects' namespaces the platform made: their pods renew credentials at its Service
    managed = {"namespaceSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "datalab"}}}
    assert managed in rule["from"]
    test_job = one(objects, "Job", "datalab-test-health")
    assert test_job["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert (
        test_job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "test"
    )


def test_the_production_configuration_is_accepted_by_the_platform(tmp_path: Path) -> None:
    objects = render(production_values(), namespace="datalab-prod")
    config = one(objects, "ConfigMap")["data"]["datalab.yaml"]
    settings = settings_in_pod(config, platform_container(objects), _secret, tmp_path)
    assert settings.backend.name == "kubernetes"
    assert settings.backend.stop_services_on_shutdown is False  # an upgrade keeps them
    kubernetes = settings.backend.kubernetes
    assert kubernetes.kubeconfig is None  # the pod's ServiceAccount
    assert (kubernetes.platform_namespace, kubernetes.rbac_user_prefix) == ("datalab-prod", "oidc:")
    # pods renew their credentials at the release's Service; S3 and Vault at their own address
    assert kubernetes.service_urls.platform == "http://datalab.datalab-prod.svc"
    assert (kubernetes.service_urls.s3, kubernetes.service_urls.vault) == (None, None)
    assert settings.server.host == "0.0.0.0" and settings.server.port == 8000
    assert settings.server.url() == "https://datalab.example.org"
    assert settings.secure_cookies
    assert settings.service_url("nb") == "https://nb.datalab.example.org/"
    assert settings.server.trusted_proxies == ["10.244.0.0/16"]
    assert settings.db_url == PRODUCTION_SECRETS["datalab-database"]["url"]
    storage = settings.storage
    assert (storage.mode, storage.endpoint_url, storage.access_key_id) == (
        "external", "https://minio.example.org", "platform-admin")  # fmt: skip
    assert storage.secret_access_key is not None
    assert storage.secret_access_key.get_secret_value() == "s3-secret-key"
    assert (storage.sts_role_arn, storage.web_identity) == ("arn:minio:iam:::role/datalab", "oidc")
    assert settings.secrets.address == "https://vault.example.org"
    assert settings.secrets.token is not None
    assert settings.secrets.token.get_secret_value() == "vault-admin-token"
    assert settings.oidc.enabled and settings.oidc.client_secret is not None
    assert settings.oidc.client_secret.get_secret_value() == "oidc-client-secret"
    assert settings.oidc.admin_groups == ["datalab-admins"]
    assert settings.security.session_secret is not None
    assert settings.branding.oidc_provider_name == "Keycloak"
    # `config` is merged last, at any depth: the region keeps the chart's domain
    assert (settings.region.id, settings.region.domain) == ("prod", "datalab.example.org")
    assert settings.region.user_quota.cpu == 16


def test_the_default_configuration_is_accepted_by_the_platform(tmp_path: Path) -> None:
    objects = render(None)
    config = one(objects, "ConfigMap")["data"]["datalab.yaml"]
    settings = settings_in_pod(config, platform_container(objects), _secret, tmp_path)
    assert settings.backend.name == "kubernetes"
    assert settings.db_url == "sqlite:////var/lib/datalab/data/datalab.db"
    assert (settings.storage.mode, settings.secrets.mode, settings.oidc.enabled) == (
        "disabled", "disabled", False)  # fmt: skip


def test_what_the_schema_cannot_see_the_platform_refuses_at_start(tmp_path: Path) -> None:
    """``config`` is free: the platform's own loader (at start) names a wrong key in it."""
    objects = render({"config": {"region": {"user_quota": {"cpus": 4}}}})
    config = one(objects, "ConfigMap")["data"]["datalab.yaml"]
    with pytest.raises(ConfigError, match=r"region\.user_quota\.cpus: unknown setting"):
        settings_in_pod(config, platform_container(objects), _secret, tmp_path)


def test_a_new_configuration_restarts_the_platform() -> None:
    def checksum(values: dict[str, Any] | None) -> str:
        pod = one(render(values), "Deployment")["spec"]["template"]
        return str(pod["metadata"]["annotations"]["checksum/config"])

    assert checksum(None) == checksum(None)
    assert checksum(None) != checksum({"logLevel": "debug"})


BAD_VALUES = [
    # (what, values merged into the production example, what Helm's message must say)
    ("unknown storage mode", {"storage": {"mode": "seaweedfs"}}, "at '/storage/mode'"),
    ("S3 without credentials", {"storage": {"existingSecret": ""}}, "at '/storage/existingSecret'"),
    ("Vault without address", {"vault": {"address": ""}}, "at '/vault/address'"),
    ("OIDC without issuer", {"oidc": {"issuerUrl": "keycloak"}}, "at '/oidc/issuerUrl'"),
    ("no scheme", {"publicUrl": "datalab.example.org"}, "at '/publicUrl'"),
    ("wildcard domain", {"servicesDomain": "*.datalab.example.org"}, "at '/servicesDomain'"),
    ("password in values", {"database": {"existingSecret": "", "url": "postgresql://u:pw@db/x"}},
     "at '/database/url'"),
    ("two replicas", {"replicaCount": 2}, "additional properties 'replicaCount'"),
    ("unknown key", {"ingress": {"host": "x.org"}}, "additional properties 'host'"),
    ("bad digest", {"image": {"digest": "latest"}}, "at '/image/digest'"),
    ("PDB of two", {"podDisruptionBudget": {"minAvailable": 2}},
     "at '/podDisruptionBudget/minAvailable'"),
    ("S3 trusting OIDC without it", {"oidc": {"enabled": False}}, "at '/oidc/enabled'"),
    ("S3 trusting OIDC without a role", {"storage": {"stsRoleArn": ""}},
     "at '/storage/stsRoleArn'"),
    ("Vault trusting OIDC without it",
     {"storage": {"webIdentity": "platform"}, "oidc": {"enabled": False}}, "at '/oidc/enabled'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("values", "message"), [b[1:] for b in BAD_VALUES], ids=[b[0] for b in BAD_VALUES]
)
def test_the_schema_refuses_bad_values_naming_the_key(values: dict[str, Any], message: str) -> None:
    bad = merged(production_values(), values)
    with pytest.raises(helm_python.HelmValuesError) as refused:
        render(bad)
    assert message in str(refused.value), str(refused.value)
    report = helm_python.lint(CHART, bad, namespace="datalab")
    assert any(message in error for error in report["errors"]), report


def test_an_existing_service_account_must_be_named() -> None:
    with pytest.raises(helm_python.HelmError, match=r"serviceAccount\.name: the ServiceAccount"):
        render({"serviceAccount": {"create": False}})
    objects = render({"serviceAccount": {"create": False, "name": "platform"}})
    assert not [o for o in objects if o["kind"] == "ServiceAccount"]
    assert one(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "platform"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "platform"


def _choices(model: type[BaseModel], field: str) -> set[str]:
    return set(typing.get_args(model.model_fields[field].annotation))


@pytest.mark.parametrize(
    ("path", "model", "field"),
    [
        (("kubernetes", "access"), KubernetesSettings, "access"),
        (("logLevel",), Settings, "log_level"),
        (("storage", "webIdentity"), StorageSettings, "web_identity"),
        (("storage", "bucketMode"), StorageSettings, "bucket_mode"),
        (("vault", "webIdentity"), SecretsSettings, "web_identity"),
    ],
    ids=lambda p: ".".join(p) if isinstance(p, tuple) else "",
)
def test_the_schemas_choices_are_the_platforms(
    path: tuple[str, ...], model: type[BaseModel], field: str
) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    for key in path:
        schema = schema["properties"][key]
    assert set(schema["enum"]) == _choices(model, field)


def test_the_schemas_modes_are_the_platforms() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]
    for key, model in (("storage", StorageSettings), ("vault", SecretsSettings)):
        assert set(schema[key]["properties"]["mode"]["enum"]) == _choices(model, "mode")


EMBEDDED = {"storage": {"mode": "embedded"}, "vault": {"mode": "embedded"}}


def test_embedded_storage_and_vault_are_served_to_users_pods_at_the_service(
    tmp_path: Path,
) -> None:
    """A small installation: SeaweedFS and OpenBao in the platform's pod, their data in its
    volume, their APIs at its Service, which users' pods (projects' namespaces) may reach."""
    objects = render(EMBEDDED)
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)
    service_ports = {p["name"]: p["port"] for p in one(objects, "Service")["spec"]["ports"]}
    assert service_ports == {"http": 80, "s3": 8333, "vault": 8200}
    container = platform_container(objects)
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": 8000, "s3": 8333, "vault": 8200}  # fmt: skip
    [platform_rule, embedded_rule] = one(objects, "NetworkPolicy")["spec"]["ingress"]
    assert [p["port"] for p in platform_rule["ports"]] == ["http"]
    assert [p["port"] for p in embedded_rule["ports"]] == ["s3", "vault"]
    # users' services only: not the ingress controller (nothing public), not the test
    assert embedded_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "datalab"}}}
    ]
    config = one(objects, "ConfigMap")["data"]["datalab.yaml"]
    settings = settings_in_pod(config, container, _secret, tmp_path)
    assert (settings.storage.mode, settings.secrets.mode) == ("embedded", "embedded")
    assert str(settings.storage.listen_address) == str(settings.secrets.listen_address)
    assert str(settings.storage.listen_address) == "0.0.0.0"
    assert (settings.storage.port, settings.secrets.port) == (8333, 8200)
    urls = settings.backend.kubernetes.service_urls
    assert (urls.s3, urls.vault) == (
        "http://datalab.datalab.svc:8333",
        "http://datalab.datalab.svc:8200",
    )


def test_embedded_storage_needs_the_volume() -> None:
    with pytest.raises(helm_python.HelmError, match=r"persistence\.enabled"):
        render(merged(EMBEDDED, {"persistence": {"enabled": False}}))


def test_where_pods_reach_the_platform() -> None:
    def service_urls(values: dict[str, Any]) -> dict[str, Any]:
        objects = render(values, name="lab", namespace="ops")
        config = yaml.safe_load(one(objects, "ConfigMap")["data"]["datalab.yaml"])
        urls: dict[str, Any] = config["backend"]["kubernetes"]["service_urls"]
        return urls

    assert service_urls({}) == {"platform": "http://lab-datalab.ops.svc"}
    assert service_urls({"service": {"port": 8080}}) == {
        "platform": "http://lab-datalab.ops.svc:8080"
    }
    chosen = {"platform": "https://datalab.example.org", "s3": "http://minio.s3.svc:9000"}
    assert service_urls({"kubernetes": {"serviceUrls": chosen}}) == chosen


def test_the_data_directory_is_a_folder_in_the_volume(tmp_path: Path) -> None:
    """The platform makes its data directory and sets its mode (0711): on a volume's root,
    owned by root (group fsGroup), a non-root process may not, so it is a folder inside."""
    objects = render(None)
    config = one(objects, "ConfigMap")["data"]["datalab.yaml"]
    settings = settings_in_pod(config, platform_container(objects), _secret, tmp_path)
    mounts = {m["name"]: m["mountPath"] for m in platform_container(objects)["volumeMounts"]}
    assert settings.data_dir.parent == Path(mounts["data"])


def test_an_external_database_is_migrated_by_a_hook_job_before_installs_and_upgrades() -> None:
    objects = render(production_values())
    job = one(objects, "Job", "datalab-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["datalab", "migrate"]
    assert container["image"] == platform_container(objects)["image"]
    # before an install nothing of the release exists: no ConfigMap, no ServiceAccount of ours
    assert "serviceAccountName" not in pod and pod["automountServiceAccountToken"] is False
    assert not any("configMap" in volume for volume in pod["volumes"])
    url = next(e for e in container["env"] if e["name"] == "DATALAB_DATABASE_URL")
    assert url["valueFrom"]["secretKeyRef"] == {"name": "datalab-database", "key": "url"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(
    "values",
    [
        {},  # SQLite: in the platform's volume, migrated by the platform at its start
        {"migrations": {"job": False}},
    ],
)
def test_no_migration_job_for_sqlite_or_when_disabled(values: dict[str, Any]) -> None:
    base = {} if not values else production_values()
    objects = render(merged(base, values) if base else None)
    assert [o for o in objects if o["metadata"]["name"].endswith("-migrate")] == []
