"""The platform's chart installed on the real test control plane (tests/kube/testenv.py: kwok
fakes the nodes, so pods become Running and Ready without a container runtime and no image is
pulled): the production example with Secrets as an administrator makes them and the data
directory on a PersistentVolume. Its objects are accepted by the API server, the platform's pod
runs under the chart's ServiceAccount, whose rights are the backend's, the configuration the
pod would load is one the platform accepts, and ``helm test`` passes."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import pytest
from tests.kube.testenv import KubeCluster, wait_for

from .chart import (
    CHART,
    PRODUCTION_SECRETS,
    merged,
    production_values,
    settings_in_pod,
)

pytestmark = pytest.mark.slow

NAMESPACE = "datalab-chart"
RELEASE = "datalab"
ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return pod["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


@pytest.fixture(scope="module")
def installed(
    kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The release, installed as an administrator would: namespace, Secrets, a volume."""
    volume = tmp_path_factory.mktemp("datalab-volume")
    with kube_cluster.client() as api:
        answer = api.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}})
        assert answer.status_code == 201, answer.text
        for name, data in PRODUCTION_SECRETS.items():
            secret = {"metadata": {"name": name}, "stringData": data}
            answer = api.post(f"/api/v1/namespaces/{NAMESPACE}/secrets", json=secret)
            assert answer.status_code == 201, answer.text
        # no provisioner here: a volume made beforehand, which the chart's claim binds to
        volume_object = {
            "metadata": {"name": "datalab-chart-data"},
            "spec": {
                "capacity": {"storage": "5Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "hostPath": {"path": str(volume)},
            },
        }
        answer = api.post("/api/v1/persistentvolumes", json=volume_object)
        assert answer.status_code == 201, answer.text
    helm = helm_python.Config(kubeconfig_path=kube_cluster.kubeconfig, namespace=NAMESPACE)
    values = merged(production_values(), {"persistence": {"size": "2Gi"}})
    release = helm.install(
        str(CHART), RELEASE, values, namespace=NAMESPACE, wait="watcher", timeout=180
    )
    try:
        yield {"helm": helm, "release": release}
    finally:
        helm.uninstall(RELEASE, ignore_not_found=True)


def test_the_release_is_deployed_and_the_platform_runs(
    kube_cluster: KubeCluster, installed: dict[str, Any]
) -> None:
    assert installed["release"]["status"] == "deployed", installed["release"]
    # the database was migrated by the pre-install Job, which succeeded (then was deleted)
    hooks = installed["helm"].get_all(RELEASE)["hooks"]
    [migrate] = [h for h in hooks if h["name"] == f"{RELEASE}-migrate"]
    assert migrate["last_run"]["phase"] == "Succeeded", migrate
    with kube_cluster.client() as api:
        deployment = api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{RELEASE}").json()
        assert deployment["status"].get("availableReplicas") == 1, deployment["status"]
        pods = api.get(
            f"/api/v1/namespaces/{NAMESPACE}/pods",
            params={"labelSelector": "app.kubernetes.io/component=platform"},
        ).json()["items"]
        [pod] = pods
        assert _pod_ready(pod), pod["status"]
        assert pod["spec"]["nodeName"] in kube_cluster.node_names
        assert pod["spec"]["serviceAccountName"] == RELEASE
        claim = api.get(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/{RELEASE}").json()
        assert claim["status"]["phase"] == "Bound"
        assert claim["spec"]["volumeName"] == "datalab-chart-data"
        ingress = api.get(
            f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/ingresses/{RELEASE}"
        ).json()
        assert [r["host"] for r in ingress["spec"]["rules"]] == [
            "datalab.example.org",
            "*.datalab.example.org",
        ]


def test_the_pod_loads_a_configuration_the_platform_accepts(
    kube_cluster: KubeCluster, installed: dict[str, Any], tmp_path: Path
) -> None:
    """What ``datalab up`` would load in the running pod: the live ConfigMap and the
    variables the live Deployment takes from the live Secrets."""
    with kube_cluster.client() as api:
        config = api.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/{RELEASE}").json()
        deployment = api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{RELEASE}").json()
        secrets = {
            item["metadata"]["name"]: item.get("data", {})
            for item in api.get(f"/api/v1/namespaces/{NAMESPACE}/secrets").json()["items"]
        }

    def secret_value(name: str, key: str) -> str:
        return base64.b64decode(secrets[name][key]).decode()

    [container] = deployment["spec"]["template"]["spec"]["containers"]
    settings = settings_in_pod(config["data"]["datalab.yaml"], container, secret_value, tmp_path)
    assert settings.backend.name == "kubernetes"
    assert settings.backend.kubernetes.platform_namespace == NAMESPACE
    assert settings.db_url == PRODUCTION_SECRETS["datalab-database"]["url"]
    assert settings.secrets.token is not None
    assert settings.secrets.token.get_secret_value() == "vault-admin-token"


def _allowed(cluster: KubeCluster, attributes: dict[str, Any]) -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": ACCOUNT,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}"],
            "resourceAttributes": attributes,
        },
    }
    with cluster.client() as api:
        answer = api.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json=review)
    return bool(answer.json()["status"]["allowed"])


RBAC = "rbac.authorization.k8s.io"


@pytest.mark.parametrize(
    ("attributes", "allowed"),
    [
        ({"verb": "create", "resource": "namespaces"}, True),
        ({"verb": "bind", "resource": "clusterroles", "group": RBAC, "name": "edit"}, True),
        ({"verb": "watch", "resource": "pods", "namespace": "user-alice"}, True),
        ({"verb": "create", "resource": "secrets", "namespace": "user-alice"}, True),
        ({"verb": "delete", "resource": "namespaces", "name": "user-alice"}, False),
        (
            {"verb": "bind", "resource": "clusterroles", "group": RBAC, "name": "cluster-admin"},
            False,
        ),
        ({"verb": "create", "resource": "clusterrolebindings", "group": RBAC}, False),
        ({"verb": "list", "resource": "nodes"}, False),
    ],
    ids=lambda a: (
        f"{a['verb']} {a.get('name') or a['resource']}" if isinstance(a, dict) else str(a)
    ),
)
def test_the_pods_account_has_the_backends_rights_and_no_more(
    kube_cluster: KubeCluster, installed: dict[str, Any], attributes: dict[str, Any], allowed: bool
) -> None:
    assert _allowed(kube_cluster, attributes) is allowed


def test_helm_test_passes(installed: dict[str, Any]) -> None:
    """The test hook is accepted and completes. kwok completes a Job's pod without running it:
    the health request itself runs only on a real cluster."""
    result = installed["helm"].test(RELEASE, timeout=120)
    assert result["release"]["status"] == "deployed", result


def _platform_pods(api: Any) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = api.get(
        f"/api/v1/namespaces/{NAMESPACE}/pods",
        params={"labelSelector": "app.kubernetes.io/component=platform"},
    ).json()["items"]
    return pods


def test_an_upgrade_with_a_new_configuration_replaces_the_pod(
    kube_cluster: KubeCluster, installed: dict[str, Any]
) -> None:
    with kube_cluster.client() as api:
        [before] = _platform_pods(api)
    values = merged(production_values(), {"config": {"region": {"name": "Renamed region"}}})
    release = installed["helm"].upgrade(
        str(CHART), RELEASE, values, namespace=NAMESPACE, wait="watcher", timeout=180
    )
    assert (release["status"], release["revision"]) == ("deployed", 2), release
    with kube_cluster.client() as api:
        config = api.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/{RELEASE}").json()
        assert "Renamed region" in config["data"]["datalab.yaml"]

        def replaced() -> list[dict[str, Any]] | None:
            pods = _platform_pods(api)
            new = len(pods) == 1 and pods[0]["metadata"]["uid"] != before["metadata"]["uid"]
            return pods if new and _pod_ready(pods[0]) else None

        [after] = wait_for(replaced, "one new platform pod, ready")
        assert after["metadata"]["uid"] != before["metadata"]["uid"]


def test_uninstall_keeps_the_data_directory(
    kube_cluster: KubeCluster, installed: dict[str, Any]
) -> None:
    installed["helm"].uninstall(RELEASE)
    with kube_cluster.client() as api:
        wait_for(
            lambda: (
                api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{RELEASE}").status_code
                == 404
            ),
            "the Deployment to go",
        )
        role = api.get(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{RELEASE}")
        assert role.status_code == 404
        claim = api.get(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/{RELEASE}")
        assert claim.status_code == 200  # helm.sh/resource-policy: keep
