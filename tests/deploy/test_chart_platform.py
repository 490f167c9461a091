"""The platform comes up with what the chart gives its pod: the configuration a release of the
chart (default values: SQLite, no S3, no Vault) renders into its ConfigMap and the rights of the
release's ServiceAccount on the real control plane. kwok's pods run no container, so the
platform runs here, as a `datalab up` process; what differs from the pod is replaced and said:
the data directory, the listen address and the kubeconfig of that ServiceAccount instead of the
in-cluster one (the API server is on loopback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import helm_python
import httpx
import pytest
import yaml
from tests.kube.testenv import KubeCluster

from datalab.processes import free_port

from .chart import CHART, one, render

pytestmark = pytest.mark.slow

NAMESPACE = "datalab-small"
# not test_chart_install's release name: ClusterRoles are cluster-wide, named after the release
RELEASE = "small"
FULLNAME = "small-datalab"
ADMIN_PASSWORD = "chart-admin-password-1"


@pytest.fixture(scope="module")
def release(kube_cluster: KubeCluster) -> Iterator[dict[str, Any]]:
    with kube_cluster.client() as api:
        answer = api.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}})
        assert answer.status_code == 201, answer.text
    helm = helm_python.Config(kubeconfig_path=kube_cluster.kubeconfig, namespace=NAMESPACE)
    values = {"persistence": {"enabled": False}}  # the control plane provisions no volumes
    helm.install(str(CHART), RELEASE, values, namespace=NAMESPACE, wait="watcher", timeout=180)
    try:
        with kube_cluster.client() as api:
            config_map = api.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/{FULLNAME}").json()
        yield yaml.safe_load(config_map["data"]["datalab.yaml"])
    finally:
        helm.uninstall(RELEASE, ignore_not_found=True)


@contextmanager
def running_platform(
    kube_cluster: KubeCluster, config: dict[str, Any], root: Path
) -> Iterator[str]:
    """``datalab up`` with ``config`` as the pod would run it: what differs from the pod is the
    data directory, the listen address and the ServiceAccount's kubeconfig (in-cluster there)."""
    port = free_port()
    account = kube_cluster.user_kubeconfig(
        f"system:serviceaccount:{NAMESPACE}:{FULLNAME}",
        ("system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}"),
    )
    config = dict(config)
    config["data_dir"] = str(root / "data")
    config["server"] = {**config["server"], "host": "127.0.0.1", "port": port}
    backend = config["backend"]
    config["backend"] = {
        **backend,
        "kubernetes": {**backend["kubernetes"], "kubeconfig": str(account)},
    }
    (root / "datalab.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATALAB_")}
    env |= {"DATALAB_CONFIG": str(root / "datalab.yaml"), "DATALAB_ADMIN_PASSWORD": ADMIN_PASSWORD}
    log_path = root / "up.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "datalab", "up"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"datalab up did not come up:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]


@pytest.fixture(scope="module")
def platform(
    kube_cluster: KubeCluster, release: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with running_platform(kube_cluster, release, tmp_path_factory.mktemp("chart-platform")) as url:
        yield url


def _token(platform: str) -> dict[str, str]:
    answer = httpx.post(
        f"{platform}/api/auth/token",
        json={"username": "admin", "password": ADMIN_PASSWORD},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def test_the_platform_comes_up_with_the_kubernetes_backend(
    release: dict[str, Any], platform: str
) -> None:
    assert release["backend"]["name"] == "kubernetes"
    assert release["backend"]["kubernetes"]["platform_namespace"] == NAMESPACE
    health = httpx.get(f"{platform}/api/health", timeout=10).json()
    assert (health["status"], health["backend"]) == ("ok", "kubernetes")


def test_its_helm_calls_work_with_the_charts_account(platform: str) -> None:
    """Orphans are every datalab release Helm lists in every namespace: the platform's Helm,
    as the chart's ServiceAccount, may list them."""
    headers = _token(platform)
    orphans = httpx.get(f"{platform}/api/admin/orphans", headers=headers, timeout=60)
    assert orphans.status_code == 200, orphans.text
    assert orphans.json()["backend"] == "kubernetes"
    assert isinstance(orphans.json()["orphans"], list)


def test_the_charts_helm_test_passes_against_it_and_fails_without_it(platform: str) -> None:
    """kwok completes the test Job's pod without running it: its command runs here instead,
    against this platform (for the Service's address), and against a port nobody listens on."""
    job = one(render({}, name=RELEASE, namespace=NAMESPACE), "Job")
    [container] = job["spec"]["template"]["spec"]["containers"]
    python, flag, script, url = container["command"]
    assert (python, flag, url) == ("python", "-c", f"http://{FULLNAME}:80/api/health")

    def run(health: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script, health], capture_output=True, text=True, timeout=60
        )

    passed = run(f"{platform}/api/health")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "'backend': 'kubernetes'" in passed.stdout
    assert run(f"http://127.0.0.1:{free_port()}/api/health").returncode != 0


def test_embedded_s3_and_vault_serve_users_pods_from_the_platforms_pod(
    kube_cluster: KubeCluster, release: dict[str, Any], tmp_path: Path
) -> None:
    """A small installation (storage.mode and vault.mode embedded): the platform runs SeaweedFS
    and OpenBao in its pod, listening on the pod's network (0.0.0.0) for users' pods, which
    reach them at the release's Service. Here the pod's other addresses are this machine's
    (127.0.0.2 stands for the pod's IP) and the ports are free ones."""
    values = {"storage": {"mode": "embedded"}, "vault": {"mode": "embedded"}}
    rendered = one(render(values, name=RELEASE, namespace=NAMESPACE), "ConfigMap")
    config = yaml.safe_load(rendered["data"]["datalab.yaml"])
    assert config["storage"]["listen_address"] == config["secrets"]["listen_address"] == "0.0.0.0"
    s3_port, vault_port = free_port(), free_port()
    config["storage"]["port"], config["secrets"]["port"] = s3_port, vault_port
    urls = config["backend"]["kubernetes"]["service_urls"]
    assert urls["s3"] == f"http://{FULLNAME}.{NAMESPACE}.svc:8333"
    with running_platform(kube_cluster, config, tmp_path) as platform:
        headers = _token(platform)
        access = httpx.get(f"{platform}/api/storage/credentials", headers=headers, timeout=60)
        assert access.status_code == 200, access.text
        issued = access.json()["credential_process"]
        # what a user's pod does with its injected credentials, at the pod's address
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.2:{s3_port}",
            aws_access_key_id=issued["AccessKeyId"],
            aws_secret_access_key=issued["SecretAccessKey"],
            aws_session_token=issued["SessionToken"],
            region_name="us-east-1",
        )
        bucket = access.json()["bucket"]
        s3.put_object(Bucket=bucket, Key="from-a-pod.txt", Body=b"hello")
        assert s3.get_object(Bucket=bucket, Key="from-a-pod.txt")["Body"].read() == b"hello"
        health = httpx.get(f"http://127.0.0.2:{vault_port}/v1/sys/health", timeout=10)
        assert health.status_code == 200 and health.json()["sealed"] is False
