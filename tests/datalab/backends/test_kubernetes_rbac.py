"""The platform's own identity in a cluster (deploy/kubernetes/platform-rbac.yaml) is enough for
the kubernetes backend, and no more: the backend runs a release's whole life as that
ServiceAccount on the real control plane, and the account may not delete namespaces, touch
nodes or cluster-wide RBAC, nor bind any ClusterRole but ``edit``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.kube.testenv import KubeCluster

from datalab.backends.base import Phase
from datalab.backends.kubernetes import KubernetesBackend
from datalab.config import KubernetesSettings

from .test_kubernetes_backend import QUOTA, spec, wait_phase

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

RBAC = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes" / "platform-rbac.yaml"
ACCOUNT = "system:serviceaccount:datalab:datalab"
ACCOUNT_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:datalab")
PATHS = {
    "Namespace": "/api/v1/namespaces",
    "ServiceAccount": "/api/v1/namespaces/{namespace}/serviceaccounts",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def platform_account(kube_cluster: KubeCluster) -> Path:
    """The shipped YAML applied by an administrator; a kubeconfig of its ServiceAccount."""
    with kube_cluster.client() as api:
        for obj in yaml.safe_load_all(RBAC.read_text()):
            path = PATHS[obj["kind"]].format(namespace=obj["metadata"].get("namespace"))
            answer = api.post(path, json=obj)
            assert answer.status_code in (201, 409), answer.text
    return kube_cluster.user_kubeconfig(ACCOUNT, ACCOUNT_GROUPS)


def _allowed(cluster: KubeCluster, attributes: dict[str, Any]) -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": ACCOUNT, "groups": list(ACCOUNT_GROUPS), "resourceAttributes": attributes},
    }
    with cluster.client() as api:
        answer = api.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json=review)
    return bool(answer.json()["status"]["allowed"])


async def test_the_backend_runs_as_the_shipped_service_account(
    kube_cluster: KubeCluster, platform_account: Path
) -> None:
    backend = KubernetesBackend(
        KubernetesSettings(kubeconfig=platform_account, ingress_namespace=None),
        quota_of=lambda project: QUOTA,
        service_url=lambda service: f"http://{service}.localhost:8000/",
    )
    await backend.start()
    try:
        service = spec("dora")
        await backend.install(service)
        await wait_phase(backend, service.id, Phase.RUNNING)
        await backend.sync_project(service.namespace, ["dora", "erin"])
        assert (await backend.suspend(service.id)).phase is Phase.SUSPENDED
        await backend.resume(service.id)
        await wait_phase(backend, service.id, Phase.RUNNING)
        assert service.id in await backend.list()
        kube_cluster.append_pod_log("ready: listening on 8888")  # what kwok's pods "log"
        lines = [line async for line in backend.logs(service.id, tail=5)]
        assert any("ready: listening on 8888" in line for line in lines), lines
        await backend.uninstall(service.id)
        for _ in range(100):
            if service.id not in await backend.list():
                break
            await asyncio.sleep(0.1)
        assert service.id not in await backend.list()
    finally:
        await backend.shutdown()


@pytest.mark.parametrize(
    "attributes",
    [
        {"verb": "delete", "resource": "namespaces", "name": "user-alice"},
        {"verb": "list", "resource": "nodes"},
        {"verb": "create", "resource": "clusterrolebindings", "group": "rbac.authorization.k8s.io"},
        {"verb": "create", "resource": "clusterroles", "group": "rbac.authorization.k8s.io"},
        {
            "verb": "bind",
            "resource": "clusterroles",
            "group": "rbac.authorization.k8s.io",
            "name": "cluster-admin",
        },
        {"verb": "create", "resource": "roles", "group": "rbac.authorization.k8s.io"},
        {"verb": "create", "resource": "pods", "subresource": "exec", "namespace": "user-alice"},
        {
            "verb": "create",
            "resource": "validatingwebhookconfigurations",
            "group": "admissionregistration.k8s.io",
        },
    ],
    ids=lambda a: f"{a['verb']} {a.get('subresource') or a['resource']} {a.get('name', '')}",
)
def test_the_platform_may_do_no_more(
    kube_cluster: KubeCluster, platform_account: Path, attributes: dict[str, Any]
) -> None:
    assert not _allowed(kube_cluster, attributes)


def test_it_may_bind_members_to_edit(kube_cluster: KubeCluster, platform_account: Path) -> None:
    assert _allowed(
        kube_cluster,
        {"verb": "bind", "resource": "clusterroles", "group": "rbac.authorization.k8s.io",
         "name": "edit"},
    )  # fmt: skip
