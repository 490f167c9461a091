"""Launching and managing services through the API (in-memory backend: nothing runs)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.pool import QueuePool

from datalab.config import Quota

from .conftest import Api, Env

pytestmark = pytest.mark.anyio

CHART = "jupyter-python"


async def launch(api: Api, expect: int = 200, project: str | None = None, **body: Any) -> Any:
    return await api.call(
        "POST", "/api/services", json={"chart": CHART, **body}, expect=expect, project=project
    )


async def test_catalog_listing_and_resolved_defaults(env: Env) -> None:
    alice = await env.user("alice")
    catalogs = await alice.call("GET", "/api/catalogs")
    assert catalogs[0]["id"] == "datalab"
    names = {c["name"] for c in catalogs[0]["charts"]}
    assert {"jupyter-python", "mlflow"} <= names
    chart = await alice.call("GET", f"/api/catalogs/datalab/charts/{CHART}")
    assert chart["name"] == CHART
    defaults = await alice.call("GET", f"/api/catalogs/datalab/charts/{CHART}/values")
    assert defaults["schema"]["type"] == "object"
    assert "alice" in str(defaults["values"])  # injected from the user's context
    missing = await alice.call("GET", "/api/catalogs/datalab/charts/nope", expect=404)
    assert "jupyter-python" in missing["error"]["message"]  # lists what exists
    await alice.call("GET", "/api/catalogs/nope", expect=404)
    await alice.call("POST", "/api/catalogs/refresh", expect=403)
    await env.admin.call("POST", "/api/catalogs/refresh")


async def test_dry_run_resolves_without_starting(env: Env) -> None:
    alice = await env.user("alice")
    result = await launch(alice, dry_run=True, name="try-me")
    assert result["dry_run"] is True
    assert result["commands"]["datalab"].startswith("datalab launch datalab/jupyter-python")
    assert "helm upgrade --install try-me" in result["commands"]["helm"]
    assert result["commands"]["values_yaml"]
    assert (await alice.call("GET", "/api/services"))["services"] == []


async def test_launch_list_get_events_logs_delete(env: Env) -> None:
    alice = await env.user("alice")
    launched = await launch(alice, name="nb-1", friendly_name="My notebook")
    assert launched["id"] == "nb-1" and launched["phase"] == "running"
    assert "datalab launch" in launched["commands"]["datalab"]
    listing = await alice.call("GET", "/api/services")
    assert [s["id"] for s in listing["services"]] == ["nb-1"]
    assert listing["commands"]["kubernetes"] == "helm list -n user-alice"
    service = await alice.call("GET", "/api/services/nb-1")
    assert service["name"] == "My notebook" and service["owner"] == "alice"
    assert service["values"]
    assert service["commands"]["delete"]["kubernetes"] == "helm uninstall nb-1 -n user-alice"
    events = await alice.call("GET", "/api/services/nb-1/events")
    assert events["events"]
    logs = await alice.call("GET", "/api/services/nb-1/logs?tail=10")
    assert isinstance(logs, str) and logs
    deleted = await alice.call("DELETE", "/api/services/nb-1")
    assert deleted["deleted"] == "nb-1"
    await alice.call("GET", "/api/services/nb-1", expect=404)


async def test_suspend_resume_rename(env: Env) -> None:
    alice = await env.user("alice")
    await launch(alice, name="nb")
    suspended = await alice.call("POST", "/api/services/nb/suspend")
    assert suspended["phase"] == "suspended"
    assert "global.suspend=true" in suspended["commands"]["kubernetes"]
    resumed = await alice.call("POST", "/api/services/nb/resume")
    assert resumed["phase"] == "running"
    await alice.call("POST", "/api/services/nb/resume", expect=409)
    renamed = await alice.call("PATCH", "/api/services/nb", json={"name": "Renamed"})
    assert renamed["name"] == "Renamed"
    await alice.call("PATCH", "/api/services/nb", json={}, expect=422)
    refused = await alice.call("PATCH", "/api/services/nb", json={"shared": True}, expect=422)
    assert "personal project" in refused["error"]["message"]


async def test_other_users_cannot_see_or_touch_a_service(env: Env) -> None:
    alice, bob = await env.user("alice"), await env.user("bob")
    await launch(alice, name="secret-nb")
    assert (await bob.call("GET", "/api/services"))["services"] == []
    for method, path in [
        ("GET", "/api/services/secret-nb"),
        ("GET", "/api/services/secret-nb/logs"),
        ("GET", "/api/services/secret-nb/events"),
        ("POST", "/api/services/secret-nb/suspend"),
        ("POST", "/api/services/secret-nb/resume"),
        ("PATCH", "/api/services/secret-nb"),
        ("DELETE", "/api/services/secret-nb"),
    ]:
        body = {"name": "x"} if method == "PATCH" else None
        await bob.call(method, path, expect=404, json=body)
    # and alice's project is not bob's to act in
    await bob.call("GET", "/api/services", project="user-alice", expect=403)
    assert (await alice.call("GET", "/api/services/secret-nb"))["phase"] == "running"


async def test_sharing_in_a_project(env: Env) -> None:
    alice, bob, carol = await env.user("alice"), await env.user("bob"), await env.user("carol")
    await env.admin.call("POST", "/api/projects", json={"name": "team"}, expect=201)
    for user, role in (("alice", "member"), ("bob", "member"), ("carol", "admin")):
        await env.admin.call(
            "POST", "/api/projects/project-team/members", json={"user": user, "role": role}
        )
    project = "project-team"
    await launch(alice, name="shared-nb", project=project)
    await bob.call("GET", "/api/services/shared-nb", project=project, expect=404)
    await alice.call("PATCH", "/api/services/shared-nb", json={"shared": True}, project=project)
    seen = await bob.call("GET", "/api/services", project=project)
    assert [s["id"] for s in seen["services"]] == ["shared-nb"]
    await bob.call("GET", "/api/services/shared-nb/logs", project=project)
    forbidden = await bob.call("DELETE", "/api/services/shared-nb", project=project, expect=403)
    assert "only its owner or a project admin" in forbidden["error"]["message"]
    await carol.call("POST", "/api/services/shared-nb/suspend", project=project)
    # not visible from the personal project
    await alice.call("GET", "/api/services/shared-nb", expect=404)


async def test_the_project_mlflow_is_discovered_by_later_launches(env: Env) -> None:
    alice, bob = await env.user("alice"), await env.user("bob")
    await env.admin.call("POST", "/api/projects", json={"name": "lab"}, expect=201)
    for user in ("alice", "bob"):
        await env.admin.call(
            "POST", "/api/projects/project-lab/members", json={"user": user, "role": "member"}
        )
    project = "project-lab"

    async def tracking_uri(api: Api, chart: str = CHART) -> str:
        dry = await launch(api, project=project, dry_run=True, chart=chart)
        uri: str = dry["values"]["mlflow"]["trackingUri"]
        return uri

    assert await tracking_uri(alice) == ""
    await launch(alice, project=project, chart="mlflow", name="tracking")
    # the memory backend's in-cluster address of the service; the local backend's is its
    # loopback port and path (tests/datalab/backends/test_local_catalog.py)
    assert await tracking_uri(alice) == "http://tracking.project-lab"
    assert await tracking_uri(alice, "autocode-api") == "http://tracking.project-lab"
    form = await alice.call("GET", f"/api/catalogs/datalab/charts/{CHART}/values", project=project)
    assert form["values"]["mlflow"]["trackingUri"] == "http://tracking.project-lab"
    assert await tracking_uri(bob) == ""  # not shared: not bob's to use
    await alice.call("PATCH", "/api/services/tracking", json={"shared": True}, project=project)
    assert await tracking_uri(bob) == "http://tracking.project-lab"
    overridden = await launch(
        bob, project=project, dry_run=True, values={"mlflow": {"trackingUri": "http://x"}}
    )
    assert overridden["values"]["mlflow"]["trackingUri"] == "http://x"
    await alice.call("POST", "/api/services/tracking/suspend", project=project)
    assert await tracking_uri(alice) == ""  # only running services
    # the region's default, when the project runs none
    env.platform.settings.region.custom_values["mlflowTrackingUri"] = "https://mlflow.example.org"
    assert await tracking_uri(alice) == "https://mlflow.example.org"
    assert await tracking_uri(alice, "autocode-api") == "https://mlflow.example.org"


async def test_quota_is_enforced_with_usage_in_the_message(env: Env) -> None:
    env.platform.settings.region.user_quota = Quota(max_services=1, cpu=None, memory_mb=None)
    alice = await env.user("alice")
    await launch(alice, name="first")
    refused = await launch(alice, name="second", expect=403)
    assert refused["error"]["code"] == "quota_exceeded"
    assert "services: 1 running of 1 allowed" in refused["error"]["message"]
    quota = await alice.call("GET", "/api/quota")
    assert quota["usage"]["services"] == 1 and quota["limits"]["max_services"] == 1
    await alice.call("POST", "/api/services/first/suspend")
    await launch(alice, name="second")  # suspended services free their share


async def test_cpu_quota(env: Env) -> None:
    env.platform.settings.region.user_quota = Quota(max_services=None, cpu=1.0, memory_mb=None)
    alice = await env.user("alice")
    refused = await launch(alice, name="big", set=["resources.limits.cpu=2000m"], expect=403)
    assert "CPU" in refused["error"]["message"]


async def test_the_readme_flow_fits_the_default_quota(env: Env) -> None:
    """Jupyter + MLflow + Jupyter, with the defaults, as the README launches them: the quota
    counts their limits (the region's default limits) and holds all three."""
    alice = await env.user("alice")
    for chart, name in (("jupyter-python", "nb"), ("mlflow", "tracking"), (CHART, "nb2")):
        launched = await launch(alice, chart=chart, name=name)
        assert launched["phase"] == "running"
    usage = (await alice.call("GET", "/api/quota"))["usage"]
    default = env.platform.settings.region.default_resources
    assert (default["cpuLimit"], default["memoryLimit"]) == ("2", "4Gi")
    assert usage == {"services": 3, "cpu": 6.0, "memory_mb": 3 * 4096}


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"name": "Not_A_Label"}, 422, "RFC 1123"),
        ({"chart": "nope"}, 404, "no chart 'nope'"),
        ({"version": "0.0.0-nope"}, 404, "has no version"),
        ({"catalog": "nope"}, 404, "no catalog 'nope'"),
        ({"set": ["noequals"]}, 422, "KEY=VALUE"),
        ({"set": ["=broken"]}, 422, "KEY=VALUE"),
        ({"values": {"no_such_key": 1}}, 422, "no_such_key"),
        ({"values_yaml": "a: [1,\n"}, 422, "YAML"),
        ({"values_yaml": ["resources: {}\n", "a: [1,\n"]}, 422, "values file 2"),
        ({"surprise": True}, 422, "surprise"),
    ],
)
async def test_bad_launch_requests(env: Env, body: dict, status: int, fragment: str) -> None:
    alice = await env.user("alice")
    error = await launch(alice, expect=status, **body)
    assert fragment in error["error"]["message"]
    assert (await alice.call("GET", "/api/services"))["services"] == []


async def test_duplicate_service_name_conflicts(env: Env) -> None:
    alice = await env.user("alice")
    await launch(alice, name="twin")
    error = await launch(alice, name="twin", expect=409)
    assert "'twin' is taken" in error["error"]["message"]


async def test_a_name_taken_by_someone_else_says_nothing_of_them(env: Env) -> None:
    """Service ids are the platform's, so another user's name is taken for bob too: he gets
    the answer any taken name gets, which names neither its owner nor their project."""
    alice, bob = await env.user("alice"), await env.user("bob")
    await launch(alice, name="alices-thesis")
    mine = (await launch(alice, name="alices-thesis", expect=409))["error"]
    theirs = (await launch(bob, name="alices-thesis", expect=409))["error"]
    assert theirs == mine
    assert "alice" not in theirs["message"].replace("alices-thesis", "")
    assert "user-alice" not in str(theirs)


async def test_two_launches_of_one_name_start_one_service(env: Env) -> None:
    alice = await env.user("alice")
    answers = await asyncio.gather(
        *(
            alice.http.post(
                "/api/services", json={"chart": CHART, "name": "race"}, headers=alice.headers()
            )
            for _ in range(4)
        )
    )
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
    assert [s["id"] for s in (await alice.call("GET", "/api/services"))["services"]] == ["race"]


class _SlowBackend:
    """Wraps the platform's backend: notes whether a database connection is checked out (a
    transaction open) at each call, and holds ``install`` until ``release`` is set."""

    def __init__(self, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
        self.backend = env.platform.backend
        pool = env.platform.db.engine.pool
        assert isinstance(pool, QueuePool)  # SQLite files: checkedout() counts connections in use
        self.pool = pool
        self.inside_transaction: list[str] = []
        self.release = asyncio.Event()
        self.release.set()
        self.installing = asyncio.Event()
        for name in ("install", "status", "suspend", "resume", "uninstall", "events"):
            monkeypatch.setattr(self.backend, name, self._wrap(name, getattr(self.backend, name)))

    def _wrap(self, name: str, method: Any) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.pool.checkedout():
                self.inside_transaction.append(name)
            if name == "install":
                self.installing.set()
                await self.release.wait()
            return await method(*args, **kwargs)

        return call


async def test_the_backend_is_never_awaited_inside_a_transaction(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite has one writer: a transaction held across a slow backend call would stall every
    other write of the platform."""
    # the status watcher off: its own transactions, in its own task, are not the requests'
    # (under load they overlapped the requests' backend calls and were counted)
    await env.platform.services.stop()
    backend = _SlowBackend(env, monkeypatch)
    alice = await env.user("alice")
    await launch(alice, name="nb")
    await alice.call("GET", "/api/services/nb")
    await alice.call("GET", "/api/services/nb/events")
    await alice.call("PATCH", "/api/services/nb", json={"name": "Renamed"})
    await alice.call("POST", "/api/services/nb/suspend")
    await alice.call("POST", "/api/services/nb/resume")
    await env.platform.services.refresh_all()
    await alice.call("DELETE", "/api/services/nb")
    assert backend.inside_transaction == []


async def test_a_service_being_installed_is_safe_to_suspend_and_delete(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the backend installs a service, its record is there (counted, visible as
    building); suspending or deleting it waits for the install, the status watcher leaves it
    alone, and nothing fails."""
    backend = _SlowBackend(env, monkeypatch)
    backend.release.clear()
    alice = await env.user("alice")
    launching = asyncio.create_task(launch(alice, name="slow"))
    await backend.installing.wait()
    seen = await alice.call("GET", "/api/services/slow")
    assert seen["phase"] == "building"
    assert (await alice.call("GET", "/api/quota"))["usage"]["services"] == 1
    await env.platform.services.refresh_all()  # the watcher: the backend does not know it yet
    suspending = asyncio.create_task(alice.call("POST", "/api/services/slow/suspend"))
    await asyncio.sleep(0.1)
    assert not suspending.done()  # waits for the install
    backend.release.set()
    assert (await launching)["phase"] == "running"
    assert (await suspending)["phase"] == "suspended"
    backend.installing.clear()
    backend.release.clear()
    relaunching = asyncio.create_task(launch(alice, name="slow2"))
    await backend.installing.wait()
    deleting = asyncio.create_task(alice.call("DELETE", "/api/services/slow2"))
    await asyncio.sleep(0.1)
    backend.release.set()
    await relaunching
    assert (await deleting)["deleted"] == "slow2"
    assert await env.platform.backend.list() == ["slow"]
    listing = (await alice.call("GET", "/api/services"))["services"]
    assert [(s["id"], s["phase"]) for s in listing] == [("slow", "suspended")]


async def test_services_survive_a_platform_restart(env: Env) -> None:
    from datalab.app import create_app
    from datalab.platform import Platform

    alice = await env.user("alice")
    await launch(alice, name="durable")
    await env.platform.stop()
    again = Platform.create(env.platform.settings)
    create_app(again)
    await again.start()
    try:
        with again.db.session() as session:
            from datalab.db import Service

            row = session.get(Service, "durable")
            assert row is not None and row.phase in ("running", "failed")
    finally:
        await again.stop()
        await env.platform.start()  # the fixture stops it again


async def test_values_files_merge_in_order_as_helm_does(env: Env) -> None:
    """``datalab launch -f a.yaml -f b.yaml`` sends both files; the server merges them deeply,
    later winning (a shallow merge lost a.yaml's memory limit), then --set."""
    alice = await env.user("alice")
    first = "resources:\n  limits:\n    cpu: 1500m\n    memory: 3Gi\n"
    second = "resources:\n  limits:\n    cpu: 1200m\n"
    dry = await launch(alice, values_yaml=[first, second], dry_run=True)
    assert dry["values"]["resources"]["limits"] == {"cpu": "1200m", "memory": "3Gi"}
    both = await launch(
        alice, values_yaml=[first, second], set=["resources.limits.cpu=1"], dry_run=True
    )
    assert both["values"]["resources"]["limits"] == {"cpu": "1", "memory": "3Gi"}


async def test_an_unreachable_backend_is_a_503_and_records_nothing(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datalab.errors import BackendUnreachable

    async def unreachable(spec: Any) -> Any:
        raise BackendUnreachable("the Kubernetes API at https://k8s.example:6443 does not answer")

    monkeypatch.setattr(env.platform.backend, "install", unreachable)
    alice = await env.user("alice")
    answer = await alice.call(
        "POST", "/api/services", json={"chart": CHART, "name": "nb"}, expect=503
    )
    assert answer["error"]["code"] == "backend_unavailable"
    assert "https://k8s.example:6443 does not answer" in answer["error"]["message"]
    assert (await alice.call("GET", "/api/services"))["services"] == []
    assert (await alice.call("GET", "/api/quota"))["usage"]["services"] == 0
