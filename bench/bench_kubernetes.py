"""The Kubernetes backend on the test control plane (tests/kube/testenv.py, kwok nodes).

- ``launch_*``: from the call to Running and Ready for the test chart (a Deployment and a
  Service), through the backend (``install()``, then its watch cache says running) next to a
  bare Helm install of the same chart and values (helm-python-sdk, then the API polled for the
  pods), alternated, each in a namespace of its own made for it ("first", what a project's
  first launch pays: the backend also applies the quota, network policy and RoleBinding) and in
  one that exists ("next"). Target: ratio <= 1.2.
- ``listing_*``: the status of every service, as the service list asks it, with 50, 100 and 200
  services spread over 10 namespaces: served from the watch cache (the API calls made during
  listings are counted: 0). Target: p99 <= 50 ms at 200, flat in N.

Needs the control plane built (``make kube-testenv``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import helm_python
from tests.kube.testenv import KubeCluster

from datalab.backends.base import Phase, ServiceSpec
from datalab.backends.kubernetes import KubernetesBackend
from datalab.config import KubernetesSettings, Quota

CHART = Path(__file__).parents[1] / "tests" / "fixtures" / "kube-charts" / "kube-app"
LAUNCHES = 5
LISTED = (50, 100, 200)
LISTINGS = 200
NAMESPACES = 10
QUOTA = Quota(max_services=100, cpu=100.0, memory_mb=100_000)


def run() -> dict[str, Any]:
    cluster = KubeCluster(nodes=3)
    cluster.start()
    try:
        return asyncio.run(_measure(cluster))
    finally:
        cluster.stop()


async def _measure(cluster: KubeCluster) -> dict[str, Any]:
    backend = KubernetesBackend(
        KubernetesSettings(kubeconfig=cluster.kubeconfig, ingress_namespace=None),
        quota_of=lambda project: QUOTA,
        service_url=lambda service: f"http://{service}.localhost/",
    )
    await backend.start()
    try:
        results: dict[str, Any] = {}
        results.update(await _launches(cluster, backend))
        results.update(await _listings(backend))
        return results
    finally:
        await backend.shutdown()


def _values() -> dict[str, Any]:
    return dict(helm_python.Chart.load(CHART).values)


def _spec(project: str, name: str | None = None) -> ServiceSpec:
    return ServiceSpec(
        id=name or f"app-{uuid.uuid4().hex[:6]}",
        owner="bench",
        project=project,
        catalog_id="bench",
        chart_name="kube-app",
        chart_version="0.1.0",
        chart_dir=CHART,
        values=_values(),
        namespace=project,
    )


async def _backend_launch(backend: KubernetesBackend, project: str) -> float:
    spec = _spec(project)
    started = time.perf_counter()
    await backend.install(spec)
    await _running(backend, spec.id)
    return time.perf_counter() - started


async def _running(backend: KubernetesBackend, service_id: str) -> None:
    """Polled as a client of the backend would (its status comes from the watch cache)."""
    for _ in range(2400):
        if (await backend.status(service_id)).phase is Phase.RUNNING:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{service_id} did not run in 2 minutes")


async def _bare_launch(cluster: KubeCluster, namespace: str, create: bool) -> float:
    """What a user does by hand: (kubectl create namespace,) helm install, wait for Ready."""
    name = f"app-{uuid.uuid4().hex[:6]}"
    helm = helm_python.Config(kubeconfig_path=cluster.kubeconfig, namespace=namespace)
    with cluster.client() as api:
        started = time.perf_counter()
        if create:
            api.post("/api/v1/namespaces", json={"metadata": {"name": namespace}})
        await asyncio.to_thread(helm.install, str(CHART), name, _values(), namespace=namespace)
        selector = f"app.kubernetes.io/instance={name}"
        while True:
            pods = api.get(
                f"/api/v1/namespaces/{namespace}/pods", params={"labelSelector": selector}
            ).json()["items"]
            if pods and all(_ready(pod) for pod in pods):
                return time.perf_counter() - started
            await asyncio.sleep(0.05)


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


async def _launches(cluster: KubeCluster, backend: KubernetesBackend) -> dict[str, Any]:
    # one of each first, not measured: Helm's runtime and the watches warm up
    await _bare_launch(cluster, "bench-warm-bare", create=True)
    await _backend_launch(backend, "user-bench-warm")
    times: dict[str, list[float]] = {"bare_first": [], "bare_next": [], "first": [], "next": []}
    for round_ in range(LAUNCHES):
        times["bare_first"].append(await _bare_launch(cluster, f"bench-bare-{round_}", True))
        times["first"].append(await _backend_launch(backend, f"user-bench-{round_}"))
        times["bare_next"].append(await _bare_launch(cluster, "bench-warm-bare", False))
        times["next"].append(await _backend_launch(backend, "user-bench-warm"))
    median = {key: statistics.median(values) for key, values in times.items()}
    return {
        "launches_each": LAUNCHES,
        "launch_first_backend_median_s": round(median["first"], 3),
        "launch_first_bare_helm_median_s": round(median["bare_first"], 3),
        "launch_first_ratio": round(median["first"] / median["bare_first"], 2),
        "launch_next_backend_median_s": round(median["next"], 3),
        "launch_next_bare_helm_median_s": round(median["bare_next"], 3),
        "launch_next_ratio": round(median["next"] / median["bare_next"], 2),
        "launch_target_ratio": 1.2,
    }


async def _listings(backend: KubernetesBackend) -> dict[str, Any]:
    calls = 0
    request, helm_call = backend.cluster._request, backend.helm._call

    async def counted_request(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await request(*args, **kwargs)

    async def counted_helm(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await helm_call(*args, **kwargs)

    results: dict[str, Any] = {}
    ids: list[str] = []
    for count in LISTED:
        while len(ids) < count:
            spec = _spec(f"user-list-{len(ids) % NAMESPACES}")
            await backend.install(spec)
            ids.append(spec.id)
        for service_id in ids:  # every one running before measuring
            await _running(backend, service_id)
        backend.cluster._request, backend.helm._call = counted_request, counted_helm  # type: ignore[method-assign]
        calls, durations = 0, []
        for _ in range(LISTINGS):
            started = time.perf_counter()
            for service_id in ids:
                await backend.status(service_id)
            durations.append((time.perf_counter() - started) * 1000)
        backend.cluster._request, backend.helm._call = request, helm_call  # type: ignore[method-assign]
        durations.sort()
        results[f"listing_{count}_p50_ms"] = round(durations[len(durations) // 2], 2)
        results[f"listing_{count}_p99_ms"] = round(durations[int(len(durations) * 0.99) - 1], 2)
        results[f"listing_{count}_api_calls"] = calls
    results["listing_target_p99_ms"] = 50
    return results
