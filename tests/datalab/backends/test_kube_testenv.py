"""The test control plane (tests/kube/testenv.py) does what the Kubernetes backend needs:
namespaces with quotas and network policies, RBAC for users, pods Running on kwok nodes, and
Helm releases through helm-python-sdk. Real etcd, kube-apiserver, controller manager,
scheduler and kwok; no mock."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import helm_python
import httpx
import pytest
import yaml
from tests.kube.testenv import KubeCluster, MissingBinaries, wait_for


def _ok(response: httpx.Response, *expected: int) -> dict[str, Any]:
    assert response.status_code in (expected or (200, 201)), response.text
    body: dict[str, Any] = response.json()
    return body


def _namespace(api: httpx.Client, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "datalab"}},
    }
    _ok(api.post("/api/v1/namespaces", json=body))
    return name


def _deployment(name: str, labels: dict[str, str], cpu: str = "100m") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "registry.invalid/never-pulled:1",  # kwok runs nothing
                            "resources": {
                                "requests": {"cpu": cpu, "memory": "64Mi"},
                                "limits": {"cpu": cpu, "memory": "64Mi"},
                            },
                        }
                    ]
                },
            },
        },
    }


def _running_pod(
    api: httpx.Client, namespace: str, selector: str, cluster: KubeCluster
) -> dict[str, Any]:
    def running() -> dict[str, Any] | None:
        pods = _ok(
            api.get(f"/api/v1/namespaces/{namespace}/pods", params={"labelSelector": selector})
        )["items"]
        for pod in pods:
            ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in pod["status"].get("conditions", [])
            )
            if pod["status"].get("phase") == "Running" and ready:
                return pod
        return None

    try:
        return wait_for(running, f"a Running pod {selector} in {namespace}", timeout=60)
    except TimeoutError as exc:
        events = api.get(f"/api/v1/namespaces/{namespace}/events").json().get("items", [])
        messages = [f"{e['reason']}: {e.get('message')}" for e in events]
        logs = {n: cluster.logs(n, 10) for n in ("kube-scheduler", "kwok")}
        raise AssertionError(f"{exc}; events: {messages}; logs: {logs}") from None


def test_missing_binaries_fail_with_the_make_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBE_TESTENV_BIN", "/nonexistent/kube-testenv-bin")
    with pytest.raises(MissingBinaries, match=r"kube-apiserver.*make kube-testenv"):
        KubeCluster()


@pytest.mark.slow
def test_the_cluster_is_what_was_pinned(kube_cluster: KubeCluster) -> None:
    with kube_cluster.client() as api:
        version = _ok(api.get("/version"))
        nodes = _ok(api.get("/api/v1/nodes", params={"labelSelector": "type=kwok"}))["items"]
    assert version["gitVersion"].startswith(kube_cluster.release), version
    assert sorted(n["metadata"]["name"] for n in nodes) == kube_cluster.node_names
    assert kube_cluster.started_in is not None
    assert kube_cluster.kubeconfig.stat().st_mode & 0o077 == 0


@pytest.mark.slow
def test_namespace_quota_and_network_policy(kube_cluster: KubeCluster) -> None:
    with kube_cluster.client() as api:
        namespace = _namespace(api, "user-alice")
        quota = {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "datalab-quota"},
            "spec": {"hard": {"requests.cpu": "1", "limits.cpu": "1", "pods": "3"}},
        }
        _ok(api.post(f"/api/v1/namespaces/{namespace}/resourcequotas", json=quota))
        policy = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "datalab-default"},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [{"podSelector": {}}]},
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                                }
                            }
                        ]
                    },
                ],
            },
        }
        path = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
        _ok(api.post(path, json=policy))
        assert _ok(api.get(f"{path}/datalab-default"))["spec"]["policyTypes"] == ["Ingress"]

        # The controller manager's quota controller fills in the status...
        quota_path = f"/api/v1/namespaces/{namespace}/resourcequotas/datalab-quota"
        wait_for(
            lambda: _ok(api.get(quota_path)).get("status", {}).get("hard"),
            "the quota's status",
        )
        # ...and the ResourceQuota admission plugin refuses what exceeds it, with its message.
        deployments = f"/apis/apps/v1/namespaces/{namespace}/deployments"
        _ok(api.post(deployments, json=_deployment("small", {"app": "small"}, cpu="500m")))
        _running_pod(api, namespace, "app=small", kube_cluster)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "too-big"},
            "spec": _deployment("x", {"app": "x"}, cpu="800m")["spec"]["template"]["spec"],
        }
        refused = api.post(f"/api/v1/namespaces/{namespace}/pods", json=pod)
        assert refused.status_code == 403, refused.text
        assert "exceeded quota: datalab-quota" in refused.json()["message"]


@pytest.mark.slow
def test_a_users_rolebinding_is_limited_to_their_namespace(kube_cluster: KubeCluster) -> None:
    with kube_cluster.client() as api:
        alice_ns = _namespace(api, "user-alice")
        bob_ns = _namespace(api, "user-bob")
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "owner"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "edit",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}
            ],
        }
        _ok(
            api.post(
                f"/apis/rbac.authorization.k8s.io/v1/namespaces/{alice_ns}/rolebindings",
                json=binding,
            )
        )

        def may_list_pods(namespace: str) -> bool:
            review = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": "alice",
                    "groups": ["system:authenticated"],
                    "resourceAttributes": {
                        "namespace": namespace,
                        "verb": "list",
                        "resource": "pods",
                    },
                },
            }
            path = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
            allowed: bool = _ok(api.post(path, json=review))["status"]["allowed"]
            return allowed

        # RBAC authorizes from the API server's watch cache: effective within moments.
        wait_for(lambda: may_list_pods(alice_ns), "alice's RoleBinding to take effect", timeout=10)
        assert not may_list_pods(bob_ns)

    # The same with alice's own credentials (a client certificate from the cluster's CA).
    with kube_cluster.client(user="alice") as as_alice:
        assert as_alice.get(f"/api/v1/namespaces/{alice_ns}/pods").status_code == 200
        assert as_alice.get(f"/api/v1/namespaces/{bob_ns}/pods").status_code == 403
        assert as_alice.get("/api/v1/nodes").status_code == 403


@pytest.mark.slow
def test_a_deployment_runs_on_a_kwok_node(kube_cluster: KubeCluster) -> None:
    with kube_cluster.client() as api:
        namespace = _namespace(api, "project-demo")
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
        _ok(api.post(path, json=_deployment("web", {"app": "web"})))
        pod = _running_pod(api, namespace, "app=web", kube_cluster)
        assert pod["spec"]["nodeName"] in kube_cluster.node_names
        assert pod["status"]["podIP"].startswith("10.244.")
        # The pod runs as the namespace's default service account, with a projected token.
        assert pod["spec"]["serviceAccountName"] == "default"
        # Its logs, through the API server and kwok (kwok serves the cluster's pod log file).
        kube_cluster.append_pod_log("line one", "line two")
        name = pod["metadata"]["name"]
        logs = api.get(f"/api/v1/namespaces/{namespace}/pods/{name}/log", params={"tailLines": 1})
        assert logs.status_code == 200, logs.text
        assert logs.text == "line two\n"
        wait_for(
            lambda: _ok(api.get(f"{path}/web")).get("status", {}).get("readyReplicas") == 1,
            "the deployment's ready replica",
        )


TINY_CHART = {
    "Chart.yaml": {"apiVersion": "v2", "name": "tiny", "version": "0.1.0", "appVersion": "1"},
    "values.yaml": {"replicaCount": 1, "image": "registry.invalid/tiny:1", "global": {}},
}
TINY_TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels:
    app.kubernetes.io/instance: {{ .Release.Name }}
spec:
  replicas: {{ if .Values.global.suspend }}0{{ else }}{{ .Values.replicaCount }}{{ end }}
  selector:
    matchLabels:
      app.kubernetes.io/instance: {{ .Release.Name }}
  template:
    metadata:
      labels:
        app.kubernetes.io/instance: {{ .Release.Name }}
    spec:
      containers:
        - name: main
          image: {{ .Values.image | quote }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
spec:
  selector:
    app.kubernetes.io/instance: {{ .Release.Name }}
  ports:
    - port: 80
"""


@pytest.fixture
def tiny_chart(tmp_path: Path) -> Path:
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    for name, content in TINY_CHART.items():
        (chart / name).write_text(yaml.safe_dump(content))
    (chart / "templates" / "all.yaml").write_text(TINY_TEMPLATE)
    return chart


@pytest.mark.slow
def test_helm_python_sdk_releases(kube_cluster: KubeCluster, tiny_chart: Path) -> None:
    """install (waiting with Helm's watcher), list, status, upgrade (suspend: Onyxia's
    global.suspend), get values, uninstall: the calls the Kubernetes backend makes."""
    with kube_cluster.client() as api:
        namespace = _namespace(api, "user-helm")
        deployment = f"/apis/apps/v1/namespaces/{namespace}/deployments/tiny"
        with helm_python.Config(
            kubeconfig_path=kube_cluster.kubeconfig, namespace=namespace
        ) as config:
            release = config.install(
                tiny_chart, "tiny", {"replicaCount": 1}, wait="watcher", timeout=90
            )
            assert release["status"] == "deployed", release
            assert release["namespace"] == namespace
            _running_pod(api, namespace, "app.kubernetes.io/instance=tiny", kube_cluster)

            listed = config.list()
            assert [(r["name"], r["revision"]) for r in listed] == [("tiny", 1)]
            assert config.status("tiny")["status"] == "deployed"
            # An ordinary Helm release: its record is the usual Secret in the namespace.
            secrets = _ok(
                api.get(
                    f"/api/v1/namespaces/{namespace}/secrets",
                    params={"labelSelector": "owner=helm"},
                )
            )["items"]
            assert [s["metadata"]["name"] for s in secrets] == ["sh.helm.release.v1.tiny.v1"]

            suspended = config.upgrade(
                tiny_chart, "tiny", {"global": {"suspend": True}}, reuse_values=True
            )
            assert (suspended["revision"], suspended["status"]) == (2, "deployed")
            assert config.get_values("tiny") == {"global": {"suspend": True}, "replicaCount": 1}
            assert _ok(api.get(deployment))["spec"]["replicas"] == 0

            uninstalled = config.uninstall("tiny", wait="watcher", timeout=60)
            assert uninstalled["release"]["status"] == "uninstalled"
            assert config.list(all_states=True) == []
        assert api.get(deployment).status_code == 404


@pytest.mark.slow
def test_helm_as_a_user_is_confined_to_their_namespace(
    kube_cluster: KubeCluster, tiny_chart: Path
) -> None:
    """What a user gets from their RoleBinding: helm in their namespace, not in another's."""
    with kube_cluster.client() as api:
        mine = _namespace(api, "user-carol")
        other = _namespace(api, "user-dave")
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "owner"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "admin",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "carol"}
            ],
        }
        _ok(
            api.post(
                f"/apis/rbac.authorization.k8s.io/v1/namespaces/{mine}/rolebindings", json=binding
            )
        )
    with kube_cluster.client(user="carol") as as_carol:
        wait_for(
            lambda: as_carol.get(f"/api/v1/namespaces/{mine}/pods").status_code == 200,
            "carol's RoleBinding to take effect",
            timeout=10,
        )
    kubeconfig = kube_cluster.user_kubeconfig("carol")
    with helm_python.Config(kubeconfig_path=kubeconfig, namespace=mine) as config:
        assert config.install(tiny_chart, "mine")["status"] == "deployed"
        assert [r["name"] for r in config.list()] == ["mine"]
        config.uninstall("mine")
    with (
        helm_python.Config(kubeconfig_path=kubeconfig, namespace=other) as config,
        pytest.raises(helm_python.HelmError, match="forbidden"),
    ):
        config.install(tiny_chart, "theirs")
