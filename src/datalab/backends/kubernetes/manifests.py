"""The Kubernetes objects the platform manages around users' Helm releases, built by pure
functions as plain dicts (tested as dicts, and against the Kubernetes schemas).

Each project (a user's personal one, ``user-alice``, or a shared one, ``project-team``) is a
namespace of that name, labelled as datalab's, holding:

- a **ResourceQuota** from the region's quota (``region.user_quota`` or ``project_quota``):
  the sum of the limits of its pods, and their number;
- a default **NetworkPolicy**: pods receive traffic only from their own namespace, from the
  platform's namespace (its proxy and credential endpoints) and from the ingress controller's;
  another user's pods cannot connect;
- a **RoleBinding** per member to the built-in ``edit`` ClusterRole: they may use ``kubectl`` and
  ``helm`` in that namespace, and nowhere else;
- with ``backend.kubernetes.image_pull_secrets``, a copy of each of those registry Secrets
  (kept in the platform's namespace) and the namespace's ``default`` ServiceAccount naming
  them, so that its pods pull from the office's registry.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

MANAGED_BY = {"app.kubernetes.io/managed-by": "datalab"}
PROJECT_LABEL = "datalab.io/project"
MEMBER_LABEL = "datalab.io/member"
QUOTA_NAME = "datalab-quota"
NETWORK_POLICY_NAME = "datalab-default"
MEMBER_ROLE = "edit"  # built-in ClusterRole: workloads, services, secrets; no RBAC, no quota


def namespace(project_id: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": project_id, "labels": {**MANAGED_BY, PROJECT_LABEL: project_id}},
    }


def resource_quota(
    project_id: str, *, cpu: float | None, memory_mb: int | None, max_services: int | None
) -> dict[str, Any]:
    """The project's quota, counted on limits (as the platform counts them)."""
    hard: dict[str, str] = {}
    if cpu is not None:
        hard["limits.cpu"] = f"{math.floor(cpu * 1000)}m"
    if memory_mb is not None:
        hard["limits.memory"] = f"{memory_mb}Mi"
    if max_services is not None:
        # a service is a release of one or a few pods; count pods generously
        hard["pods"] = str(max_services * 4)
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": QUOTA_NAME, "namespace": project_id, "labels": dict(MANAGED_BY)},
        "spec": {"hard": hard},
    }


def network_policy(
    project_id: str, *, platform_namespace: str, ingress_namespace: str | None
) -> dict[str, Any]:
    """Traffic into the project's pods: from its own namespace, the platform's and the ingress
    controller's; nothing from other projects."""
    peers: list[dict[str, Any]] = [
        {"podSelector": {}},  # the project's own pods
        {"namespaceSelector": _named(platform_namespace)},
    ]
    if ingress_namespace:
        peers.append({"namespaceSelector": _named(ingress_namespace)})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": NETWORK_POLICY_NAME,
            "namespace": project_id,
            "labels": dict(MANAGED_BY),
        },
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": peers}]},
    }


def member_role_binding(project_id: str, user: str, *, subject_prefix: str = "") -> dict[str, Any]:
    """Lets ``user`` (as the cluster knows them: ``subject_prefix`` + name, e.g. ``oidc:``) use
    the namespace with ``kubectl``/``helm``."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": member_binding_name(user),
            "namespace": project_id,
            "labels": {**MANAGED_BY, MEMBER_LABEL: user},
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": MEMBER_ROLE,
        },
        "subjects": [
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "User",
                "name": f"{subject_prefix}{user}",
            }
        ],
    }


def pull_secret_copy(project_id: str, secret: dict[str, Any]) -> dict[str, Any]:
    """A registry Secret of the platform's namespace, as the project's namespace holds it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret["metadata"]["name"],
            "namespace": project_id,
            "labels": dict(MANAGED_BY),
        },
        "type": secret.get("type", "kubernetes.io/dockerconfigjson"),
        "data": dict(secret.get("data") or {}),
    }


def default_service_account(project_id: str, pull_secrets: Iterable[str]) -> dict[str, Any]:
    """The namespace's ``default`` ServiceAccount, naming the registry Secrets its pods use."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": project_id},
        "imagePullSecrets": [{"name": name} for name in pull_secrets],
    }


def member_binding_name(user: str) -> str:
    return f"datalab-member-{user}"  # user names are RFC 1123 labels


def project_objects(
    project_id: str,
    members: Iterable[str],
    *,
    cpu: float | None,
    memory_mb: int | None,
    max_services: int | None,
    platform_namespace: str,
    ingress_namespace: str | None,
    subject_prefix: str = "",
    pull_secrets: Iterable[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Everything a project's namespace holds besides users' releases, namespace first.
    ``pull_secrets``: the registry Secrets of the platform's namespace its pods pull with."""
    pull_secrets = list(pull_secrets)
    pulling = [pull_secret_copy(project_id, secret) for secret in pull_secrets]
    if pulling:
        names = [secret["metadata"]["name"] for secret in pulling]
        pulling.append(default_service_account(project_id, names))
    return [
        namespace(project_id),
        resource_quota(project_id, cpu=cpu, memory_mb=memory_mb, max_services=max_services),
        network_policy(
            project_id,
            platform_namespace=platform_namespace,
            ingress_namespace=ingress_namespace,
        ),
        *(
            member_role_binding(project_id, user, subject_prefix=subject_prefix)
            for user in sorted(set(members))
        ),
        *pulling,
    ]


def _named(namespace_name: str) -> dict[str, Any]:
    # every namespace carries this label (Kubernetes >= 1.22)
    return {"matchLabels": {"kubernetes.io/metadata.name": namespace_name}}
