"""The Kubernetes backend against a real control plane (tests/kube/testenv.py: etcd,
kube-apiserver, controller manager, scheduler, kwok nodes): Helm releases in per-project
namespaces with their quota, network policy and RBAC; status from the watches; suspend,
resume, re-attach after a restart, orphans, faults."""

from __future__ import annotations

import asyncio
import base64
import uuid
from pathlib import Path
from typing import Any

import helm_python
import pytest
from tests.kube.testenv import KubeCluster, free_port

from datalab.backends.base import BackendError, Phase, ServiceNotFound, ServiceSpec
from datalab.backends.kubernetes import KubernetesBackend
from datalab.config import KubernetesSettings, Quota
from datalab.errors import BackendConflict, BackendUnreachable

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHART = Path(__file__).resolve().parents[2] / "fixtures" / "kube-charts" / "kube-app"
QUOTA = Quota(max_services=5, cpu=1.0, memory_mb=1024)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_backend(cluster: KubeCluster) -> KubernetesBackend:
    settings = KubernetesSettings(kubeconfig=cluster.kubeconfig, ingress_namespace=None)
    return KubernetesBackend(
        settings,
        quota_of=lambda project: QUOTA,
        service_url=lambda service: f"http://{service}.localhost:8000/",
    )


@pytest.fixture
async def backend(kube_cluster: KubeCluster) -> Any:
    backend = make_backend(kube_cluster)
    await backend.start()
    yield backend
    await backend.shutdown()


def spec(owner: str = "alice", project: str | None = None, **values: Any) -> ServiceSpec:
    project = project or f"user-{owner}-{uuid.uuid4().hex[:4]}"
    return ServiceSpec(
        id=f"app-{uuid.uuid4().hex[:6]}",
        owner=owner,
        project=project,
        catalog_id="tests",
        chart_name="kube-app",
        chart_version="0.1.0",
        chart_dir=CHART,
        values={**helm_python.Chart.load(CHART).values, **values},
        namespace=project,
    )


async def wait_phase(backend: KubernetesBackend, service_id: str, phase: Phase) -> Any:
    for _ in range(300):
        status = await backend.status(service_id)
        if status.phase is phase:
            return status
        await asyncio.sleep(0.2)
    raise AssertionError(f"{service_id} still {status.phase}: {status.reason}")


async def test_a_release_through_its_life(
    backend: KubernetesBackend, kube_cluster: KubeCluster
) -> None:
    service = spec()
    status = await backend.install(service)
    assert status.phase in (Phase.STARTING, Phase.RUNNING)
    status = await wait_phase(backend, service.id, Phase.RUNNING)
    assert status.urls == [f"http://{service.id}.localhost:8000/"]
    assert status.resources["cpu_limit"] == 0.2

    # an ordinary Helm release, in the project's namespace, with the project's objects
    listed = helm_python.Config(
        kubeconfig_path=kube_cluster.kubeconfig, namespace=service.namespace
    )
    releases = listed.list()
    names = [r["name"] for r in releases]
    assert names == [service.id]
    with kube_cluster.client() as api:
        ns = api.get(f"/api/v1/namespaces/{service.namespace}").json()
        assert ns["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "datalab"
        quota = api.get(
            f"/api/v1/namespaces/{service.namespace}/resourcequotas/datalab-quota"
        ).json()
        assert quota["spec"]["hard"]["limits.cpu"] == "1"
        policy = api.get(
            f"/apis/networking.k8s.io/v1/namespaces/{service.namespace}"
            "/networkpolicies/datalab-default"
        )
        assert policy.status_code == 200

    # suspended: scaled to zero with its values kept; resumed: running again
    assert (await backend.suspend(service.id)).phase is Phase.SUSPENDED
    for _ in range(150):
        if not backend.cluster.pods_of(service.namespace, service.id):
            break
        await asyncio.sleep(0.2)
    assert not backend.cluster.pods_of(service.namespace, service.id)
    await backend.resume(service.id)
    await wait_phase(backend, service.id, Phase.RUNNING)
    reasons = [e.reason for e in await backend.events(service.id)]
    # the platform's own steps in order, with the cluster's (to the second) among them
    ours = [r for r in reasons if r in ("Installing", "Installed", "Suspended", "Resumed")]
    assert ours == ["Installing", "Installed", "Suspended", "Resumed"]
    assert "Scheduled" in reasons

    await backend.uninstall(service.id)
    with pytest.raises(ServiceNotFound):
        await backend.status(service.id)
    await backend.uninstall(service.id)  # idempotent


async def test_the_owner_may_use_their_namespace_and_no_other(
    backend: KubernetesBackend, kube_cluster: KubeCluster
) -> None:
    mine, theirs = spec("alice"), spec("bob")
    for service in (mine, theirs):
        await backend.install(service)

    def may(user: str, verb: str, namespace: str) -> bool:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "resourceAttributes": {"namespace": namespace, "verb": verb, "resource": "pods"},
            },
        }
        with kube_cluster.client() as api:
            answer = api.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json=review)
        return bool(answer.json()["status"]["allowed"])

    assert may("alice", "list", mine.namespace) and may("alice", "delete", mine.namespace)
    assert not may("alice", "list", theirs.namespace)
    assert not may("alice", "list", "kube-system")
    # a member removed from the project loses it at once
    await backend.sync_project(mine.namespace, ["carol"])
    assert not may("alice", "list", mine.namespace) and may("carol", "list", mine.namespace)
    for service in (mine, theirs):
        await backend.uninstall(service.id)


async def test_restart_reattaches_and_reports_orphans(kube_cluster: KubeCluster) -> None:
    first = make_backend(kube_cluster)
    await first.start()
    service, orphan = spec(), spec()
    try:
        await first.install(service)
        await first.install(orphan)
        await wait_phase(first, service.id, Phase.RUNNING)
        state = first.get_state(service.id)
    finally:
        await first.shutdown()
    second = make_backend(kube_cluster)
    await second.start()
    try:
        status = await second.load_state(service, state)
        assert status.phase in (Phase.RUNNING, Phase.STARTING)
        await wait_phase(second, service.id, Phase.RUNNING)
        # the release it has no record of is reported (never deleted)
        assert orphan.id in await second.list()
    finally:
        for name in (service, orphan):
            await second.helm.uninstall(name.namespace, name.id)
        await second.shutdown()


async def test_faults_are_clear(backend: KubernetesBackend, tmp_path: Path) -> None:
    # over the project's quota: the cluster refuses the pods, the service says so
    greedy = spec(resources={"limits": {"cpu": "4", "memory": "64Mi"}, "requests": {}})
    await backend.install(greedy)
    status = await wait_phase(backend, greedy.id, Phase.FAILED)
    assert "quota" in status.reason
    await backend.uninstall(greedy.id)
    # a chart that does not render
    broken = tmp_path / "broken"
    (broken / "templates").mkdir(parents=True)
    (broken / "Chart.yaml").write_text("apiVersion: v2\nname: broken\nversion: 0.1.0\n")
    (broken / "templates" / "x.yaml").write_text("{{ .Values.missing.key }}\n")
    bad = spec()
    bad = ServiceSpec(**{**bad.__dict__, "chart_dir": broken, "values": {}})
    with pytest.raises(BackendError, match="helm install"):
        await backend.install(bad)
    with pytest.raises(ServiceNotFound):
        await backend.status(bad.id)
    assert (
        backend.unavailable(tmp_path, "nothing")
        == "chart 'nothing' has no templates: it cannot run on Kubernetes"
    )


async def test_what_is_taken_in_the_cluster_is_a_conflict(
    backend: KubernetesBackend, kube_cluster: KubeCluster
) -> None:
    # a release of that name made by hand in the namespace: named, with what to do
    taken = spec()
    await backend._ensure_project(taken.namespace, taken.owner)
    by_hand = helm_python.Config(kubeconfig_path=kube_cluster.kubeconfig, namespace=taken.namespace)
    by_hand.install(str(CHART), taken.id, taken.values, namespace=taken.namespace)
    with pytest.raises(BackendConflict, match=rf"helm uninstall {taken.id} -n {taken.namespace}"):
        await backend.install(taken)
    with pytest.raises(ServiceNotFound):
        await backend.status(taken.id)
    by_hand.uninstall(taken.id)

    # a namespace being deleted (held by an object's finalizer): try again once it is gone
    doomed = spec()
    namespace, held = doomed.namespace, "/api/v1/namespaces/{}/configmaps/held"
    with kube_cluster.client() as api:
        api.post("/api/v1/namespaces", json={"metadata": {"name": namespace}}).raise_for_status()
        api.post(
            f"/api/v1/namespaces/{namespace}/configmaps",
            json={"metadata": {"name": "held", "finalizers": ["tests.datalab.io/hold"]}},
        ).raise_for_status()
        api.delete(f"/api/v1/namespaces/{namespace}").raise_for_status()
        try:
            with pytest.raises(BackendConflict, match=rf"namespace '{namespace}' is being deleted"):
                await backend.install(doomed)
        finally:
            api.patch(
                held.format(namespace),
                json={"metadata": {"finalizers": None}},
                headers={"Content-Type": "application/merge-patch+json"},
            ).raise_for_status()


async def test_an_unreachable_cluster_is_named(backend: KubernetesBackend) -> None:
    """The API server gone (here: the client pointed at a closed port) is a BackendUnreachable
    naming it and saying what to check, and nothing is recorded."""
    api = backend.cluster.api
    assert api is not None
    real = api.configuration.host
    api.configuration.host = f"https://127.0.0.1:{free_port()}"
    try:
        service = spec()
        with pytest.raises(BackendUnreachable, match=r"Kubernetes API at https://127\.0\.0\.1:"):
            await backend.install(service)
        with pytest.raises(ServiceNotFound):
            await backend.status(service.id)
    finally:
        api.configuration.host = real


async def test_pods_pull_with_the_offices_registry_secrets(kube_cluster: KubeCluster) -> None:
    name = f"registry-{uuid.uuid4().hex[:4]}"
    config = base64.b64encode(b'{"auths": {"registry.example.org": {"auth": "dXNlcjpwdw=="}}}')
    with kube_cluster.client() as api:
        api.post("/api/v1/namespaces", json={"metadata": {"name": "datalab"}})  # 409: there
        api.post(
            "/api/v1/namespaces/datalab/secrets",
            json={
                "metadata": {"name": name},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": config.decode()},
            },
        ).raise_for_status()
    settings = KubernetesSettings(
        kubeconfig=kube_cluster.kubeconfig, ingress_namespace=None, image_pull_secrets=[name]
    )
    backend = KubernetesBackend(
        settings, quota_of=lambda project: QUOTA, service_url=lambda service: "http://x/"
    )
    await backend.start()
    try:
        service = spec()
        await backend.install(service)
        await wait_phase(backend, service.id, Phase.RUNNING)
        namespace = service.namespace
        with kube_cluster.client() as api:
            copy = api.get(f"/api/v1/namespaces/{namespace}/secrets/{name}").json()
            account = api.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/default").json()
        assert copy["data"] == {".dockerconfigjson": config.decode()}
        assert account["imagePullSecrets"] == [{"name": name}]
        [pod] = backend.cluster.pods_of(namespace, service.id)
        assert pod["spec"]["imagePullSecrets"] == [{"name": name}]
        await backend.uninstall(service.id)
    finally:
        await backend.shutdown()

    # one that is not there: named, with how to make it
    settings = settings.model_copy(update={"image_pull_secrets": ["missing"]})
    backend = KubernetesBackend(
        settings, quota_of=lambda project: QUOTA, service_url=lambda service: "http://x/"
    )
    await backend.start()
    try:
        with pytest.raises(BackendError, match=r"'missing' .* is not in namespace 'datalab'"):
            await backend.install(spec())
    finally:
        await backend.shutdown()
