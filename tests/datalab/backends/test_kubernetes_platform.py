"""The whole platform with ``backend.name: kubernetes`` on the real control plane
(tests/kube/testenv.py), as a user meets it: the shipped MLflow and Jupyter charts launched,
listed, suspended, resumed and deleted through the API and the CLI, with the real embedded
SeaweedFS and OpenBao minting the credentials injected into the pods.

The platform reaches its embedded servers on loopback, which pods cannot:
``backend.kubernetes.service_urls`` gives the addresses pods reach them at, and those, never the
loopback ones, are what the releases receive. (The control plane's nodes are kwok's: pods become
Running and Ready without containers, so nothing here opens a notebook; the volumes are off
because the control plane has no storage provisioner.)"""

from __future__ import annotations

import asyncio
import base64
import re
import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import helm_python
import httpx
import pytest
import yaml
from tests.kube.testenv import KubeCluster

from datalab.config import load_settings
from datalab.errors import ConfigError
from datalab.platform import Platform
from datalab.processes import free_port
from datalab.storage.service import s3_client

from ..test_cli_commands import Served, serve
from .test_kubernetes_backend import make_backend

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

POD_URLS = {
    "s3": "http://seaweedfs.datalab.svc:8333",
    "vault": "http://openbao.datalab.svc:8200",
    "platform": "http://datalab.datalab.svc:8000",
}
NO_VOLUME = {"persistence": {"enabled": False}}  # the control plane provisions no volumes


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def cluster_settings(
    kube_cluster: KubeCluster, data_dir: Path, stores: str = "embedded", **overrides: Any
) -> Any:
    kubernetes = overrides.pop("kubernetes", {})
    return load_settings(
        None,
        data_dir=data_dir,
        server={"port": free_port()},
        backend={
            "name": "kubernetes",
            "kubernetes": {
                "kubeconfig": str(kube_cluster.kubeconfig),
                "ingress_namespace": None,
                **kubernetes,
            },
        },
        storage={"mode": stores},
        secrets={"mode": stores},
        **overrides,
    )


@pytest.fixture(scope="module")
async def served(
    kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    tmp_path = tmp_path_factory.mktemp("kubernetes-platform")
    settings = cluster_settings(
        kube_cluster, tmp_path / "data", kubernetes={"service_urls": POD_URLS}
    )
    async with serve(settings, tmp_path) as served:
        yield served


async def wait_phase(served: Served, token: str, service_id: str, phase: str) -> dict[str, Any]:
    for _ in range(300):
        service = await served.api(token, "GET", f"/api/services/{service_id}")
        if service["phase"] == phase:
            return service
        assert service["phase"] != "failed", service["reason"]
        await asyncio.sleep(0.2)
    raise AssertionError(f"{service_id} still {service['phase']}: {service['reason']}")


def secret_data(kube_cluster: KubeCluster, namespace: str, name: str) -> dict[str, str]:
    with kube_cluster.client() as api:
        secret = api.get(f"/api/v1/namespaces/{namespace}/secrets/{name}").json()
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


async def test_a_user_runs_mlflow_and_jupyter_in_their_namespace(
    served: Served, kube_cluster: KubeCluster
) -> None:
    token = served.token("kira", create=True)
    namespace = "user-kira"

    # MLflow first: Jupyter then finds it in the project (its in-cluster Service)
    mlflow = await served.api(
        token,
        "POST",
        "/api/services",
        json={"chart": "mlflow", "name": "mlflow", "values": NO_VOLUME},
    )
    await wait_phase(served, token, "mlflow", "running")
    launched = await served.api(
        token,
        "POST",
        "/api/services",
        json={"chart": "jupyter-python", "name": "nb", "values": NO_VOLUME, "mask_secrets": False},
    )
    service = await wait_phase(served, token, "nb", "running")
    assert mlflow["id"] == "mlflow" and service["id"] == "nb"

    # an ordinary Helm release in the user's namespace: the printed helm line is what ran
    releases = helm_python.Config(kubeconfig_path=kube_cluster.kubeconfig, namespace=namespace)
    assert sorted(r["name"] for r in releases.list()) == ["mlflow", "nb"]
    nb = releases.get_metadata("nb")
    helm_line = shlex.split(launched["commands"]["helm"].split(" && ")[-1])
    assert helm_line[:4] == ["helm", "upgrade", "--install", nb["name"]]
    assert helm_line[helm_line.index("--namespace") + 1] == nb["namespace"] == namespace
    chart_version = helm_line[helm_line.index("--version") + 1]
    assert nb["version"] == chart_version, nb
    assert helm_line[4].endswith("/jupyter-python")
    printed_values = yaml.safe_load(launched["commands"]["values_yaml"])
    # `helm get values nb`: what the line's values.yaml says
    assert releases.get_values("nb") == printed_values

    # what the pods are given: the addresses they reach, never the platform's loopback
    env = secret_data(kube_cluster, namespace, "nb-jupyter-python")
    assert env["AWS_ENDPOINT_URL"] == POD_URLS["s3"]
    assert env["AWS_CONTAINER_CREDENTIALS_FULL_URI"].startswith(POD_URLS["platform"] + "/api/")
    assert env["VAULT_ADDR"] == POD_URLS["vault"]
    assert printed_values["mlflow"]["trackingUri"] == f"http://mlflow.{namespace}.svc:5000/"
    assert "127.0.0.1" not in yaml.safe_dump(printed_values)
    # and the credentials minted for them are real: the S3 session reads the user's bucket
    storage = served.platform.storage
    assert storage is not None
    s3 = s3_client(
        storage.endpoint_url,
        storage.region,
        printed_values["s3"]["accessKeyId"],
        printed_values["s3"]["secretAccessKey"],
        printed_values["s3"]["sessionToken"],
    )
    bucket = printed_values["s3"]["workingDirectoryPath"].split("/")[0]
    s3.put_object(Bucket=bucket, Key="from-the-pod.txt", Body=b"hello")
    # secrets are in Secrets (and Helm's own records), never in a ConfigMap
    with kube_cluster.client() as api:
        config_maps = api.get(f"/api/v1/namespaces/{namespace}/configmaps").json()
    assert printed_values["s3"]["secretAccessKey"] not in str(config_maps)

    # the CLI lists them; suspend and resume keep the values; delete uninstalls
    listing = await served.cli(token, "services")
    assert "mlflow" in listing and "nb" in listing
    printed = {
        action: shlex.split(line["datalab"])[1:] for action, line in service["commands"].items()
    }
    await served.cli(token, *printed["suspend"])
    await wait_phase(served, token, "nb", "suspended")
    assert releases.get_values("nb")["global"]["suspend"] is True
    await served.cli(token, *printed["resume"])
    await wait_phase(served, token, "nb", "running")
    await served.cli(token, *printed["delete"], "--yes")
    await served.cli(token, "delete", "mlflow", "--yes")
    assert releases.list() == []


async def test_pods_cannot_be_given_the_platforms_loopback(
    kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    """Embedded servers on loopback and no address for pods: the platform refuses to start,
    naming the setting, rather than launch services that cannot reach their storage."""
    settings = cluster_settings(kube_cluster, tmp_path / "data")
    platform = Platform.create(settings)
    with pytest.raises(ConfigError, match=r"backend\.kubernetes\.service_urls\.s3"):
        await platform.start()
    backend = make_backend(kube_cluster)
    assert (
        backend.reachable_url("vault", "https://vault.example.org") == "https://vault.example.org"
    )
    with pytest.raises(ConfigError, match=r"service_urls\.platform"):
        backend.reachable_url("platform", "http://localhost:8000")


async def test_a_release_made_by_hand_is_a_conflict_named_in_the_answer(
    served: Served, kube_cluster: KubeCluster
) -> None:
    token, namespace = served.token("lena", create=True), "user-lena"
    with kube_cluster.client() as api:
        api.post("/api/v1/namespaces", json={"metadata": {"name": namespace}}).raise_for_status()
    by_hand = helm_python.Config(kubeconfig_path=kube_cluster.kubeconfig, namespace=namespace)
    chart = served.platform.catalogs.get_chart("datalab", "mlflow")
    by_hand.install(str(chart.path), "mine", {}, namespace=namespace)
    async with httpx.AsyncClient(base_url=served.url) as http:
        answer = await http.post(
            "/api/services",
            json={"chart": "mlflow", "name": "mine", "values": NO_VOLUME},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 409, answer.text
    assert "helm uninstall mine -n user-lena" in answer.json()["error"]["message"]
    assert (await served.api(token, "GET", "/api/services"))["services"] == []
    by_hand.uninstall("mine")


async def test_through_ingress_services_are_at_their_ingress_hosts(
    kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    """``access: ingress``: the chart's Ingress, made from the region's settings as Onyxia's
    context gives them (domain, class, cert-manager issuer), is where users open the service."""
    settings = cluster_settings(
        kube_cluster,
        tmp_path / "data",
        stores="disabled",
        kubernetes={"access": "ingress"},
        region={
            "domain": "apps.example.org",
            "ingress_class_name": "nginx",
            "use_cert_manager": True,
            "cert_manager_cluster_issuer": "letsencrypt",
        },
    )
    async with serve(settings, tmp_path) as served:
        token = served.token("ivy", create=True)
        launch = {"chart": "jupyter-python", "name": "nb", "values": NO_VOLUME}
        await served.api(token, "POST", "/api/services", json=launch)
        service = await wait_phase(served, token, "nb", "running")
        [url] = service["urls"]
        assert re.fullmatch(r"https://user-ivy-[a-z0-9-]+-0\.apps\.example\.org/", url), url
        with kube_cluster.client() as api:
            ingress = api.get(
                "/apis/networking.k8s.io/v1/namespaces/user-ivy/ingresses/nb-jupyter-python"
            ).json()
        assert ingress["spec"]["ingressClassName"] == "nginx"
        assert ingress["spec"]["rules"][0]["host"] == url.removeprefix("https://").rstrip("/")
        assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
        await served.cli(token, "delete", "nb", "--yes")
