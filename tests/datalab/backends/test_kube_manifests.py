"""The objects around users' releases, as dicts, and valid for the Kubernetes API (the schemas
of PyPI kubernetes-validate, strict: unknown fields are errors)."""

from __future__ import annotations

import kubernetes_validate
import pytest

from datalab.backends.kubernetes import manifests

KUBERNETES = "1.33.0"


def _objects() -> list[dict]:
    return manifests.project_objects(
        "project-team",
        ["alice", "bob", "alice"],
        cpu=8.5,
        memory_mb=32768,
        max_services=20,
        platform_namespace="datalab",
        ingress_namespace="ingress-nginx",
        subject_prefix="oidc:",
    )


@pytest.mark.parametrize("obj", _objects(), ids=lambda o: o["kind"])
def test_every_object_is_valid_for_the_kubernetes_api(obj: dict) -> None:
    kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_what_a_projects_namespace_holds() -> None:
    namespace, quota, policy, *bindings = _objects()
    assert namespace["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "datalab",
        "datalab.io/project": "project-team",
    }
    assert quota["spec"]["hard"] == {
        "limits.cpu": "8500m",
        "limits.memory": "32768Mi",
        "pods": "80",
    }
    # traffic in: the project's own pods, the platform, the ingress controller; no one else
    peers = policy["spec"]["ingress"][0]["from"]
    assert peers == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "datalab"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
    ]
    assert policy["spec"]["podSelector"] == {} and policy["spec"]["policyTypes"] == ["Ingress"]
    assert [b["metadata"]["name"] for b in bindings] == [
        "datalab-member-alice",
        "datalab-member-bob",
    ]
    assert bindings[0]["subjects"][0]["name"] == "oidc:alice"
    assert bindings[0]["roleRef"]["name"] == "edit"


def test_no_quota_key_for_an_unlimited_resource() -> None:
    quota = manifests.resource_quota("user-alice", cpu=None, memory_mb=1024, max_services=None)
    assert quota["spec"]["hard"] == {"limits.memory": "1024Mi"}
    policy = manifests.network_policy(
        "user-alice", platform_namespace="datalab", ingress_namespace=None
    )
    assert len(policy["spec"]["ingress"][0]["from"]) == 2
