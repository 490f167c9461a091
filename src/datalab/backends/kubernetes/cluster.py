"""The cluster, as the Kubernetes backend sees it: an API client (kubernetes-asyncio, as
KubeSpawner's), server-side apply of the objects the platform manages, and watches that keep
the pods and events of releases in memory (KubeSpawner's reflector): ``status()`` and the
service list never make one API call per service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from datalab.errors import BackendConflict, BackendError, BackendUnreachable

if TYPE_CHECKING:
    from aiohttp import ClientResponse

log = logging.getLogger(__name__)

INSTANCE_LABEL = "app.kubernetes.io/instance"  # set on their pods by Helm charts
FIELD_MANAGER = "datalab"
#: where the objects the platform applies live in the API (kind: (api prefix, plural, namespaced))
PATHS = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ResourceQuota": ("/api/v1", "resourcequotas", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "Secret": ("/api/v1", "secrets", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
}
WATCH_RETRY_S = 2.0
REQUEST_TIMEOUT_S = 30.0


class Reflector:
    """One kind of object, listed then watched, in memory; restarts its watch when it expires
    or fails. Objects are kept by namespace and group (``group_of(obj)``: e.g. the release a pod
    belongs to), so that what a release needs is found without looking at the others'."""

    def __init__(
        self,
        kind: str,
        list_call: Callable[..., Any],
        group_of: Callable[[dict[str, Any]], str],
        **selectors: str,
    ) -> None:
        self.kind = kind
        self.list_call = list_call
        self.group_of = group_of
        self.selectors = selectors
        # namespace -> group -> name -> object
        self.groups: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        self._group: dict[tuple[str, str], str] = {}  # (namespace, name) -> its group
        self.first_load = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"watch-{self.kind}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def in_group(self, namespace: str, group: str) -> list[dict[str, Any]]:
        return list(self.groups.get(namespace, {}).get(group, {}).values())

    def group_names(self, namespace: str) -> list[str]:
        return list(self.groups.get(namespace, {}))

    def _put(self, obj: dict[str, Any]) -> None:
        key = _key(obj)
        self._drop(key)
        group = self.group_of(obj)
        self.groups.setdefault(key[0], {}).setdefault(group, {})[key[1]] = obj
        self._group[key] = group

    def _drop(self, key: tuple[str, str]) -> None:
        group = self._group.pop(key, None)
        if group is None:
            return
        namespace = self.groups[key[0]]
        members = namespace[group]
        members.pop(key[1], None)
        if not members:
            del namespace[group]
            if not namespace:
                del self.groups[key[0]]

    async def _run(self) -> None:
        while True:
            try:
                version = await self._list()
                await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API restarted, a network blip: list again
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # stopping: an error while closing
                    raise asyncio.CancelledError from exc
                log.warning("watch of %s interrupted (%s); listing again", self.kind, exc)
                await asyncio.sleep(WATCH_RETRY_S)

    async def _list(self) -> str:
        answer = await self.list_call(_preload_content=False, **self.selectors)
        body = await answer.json()
        self.groups, self._group = {}, {}
        for item in body.get("items", []):
            self._put(item)
        self.first_load.set()
        return str(body["metadata"]["resourceVersion"])

    async def _watch(self, version: str) -> None:
        async with watch.Watch() as stream:
            events = stream.stream(
                self.list_call, resource_version=version, timeout_seconds=300, **self.selectors
            )
            async for event in events:
                obj = event["raw_object"]
                if event["type"] == "ERROR":  # e.g. 410 Gone: the version is too old
                    raise RuntimeError(obj.get("message", "watch error"))
                if event["type"] == "DELETED":
                    self._drop(_key(obj))
                else:
                    self._put(obj)


def _release_of_pod(pod: dict[str, Any]) -> str:
    return str(((pod.get("metadata") or {}).get("labels") or {}).get(INSTANCE_LABEL, ""))


def _object_of_event(event: dict[str, Any]) -> str:
    return str((event.get("involvedObject") or {}).get("name", ""))


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace", "")), str(metadata.get("name", ""))


class Cluster:
    def __init__(self, kubeconfig: Path | None, context: str | None) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.api: client.ApiClient | None = None
        self.pods: Reflector | None = None
        self.events: Reflector | None = None

    async def start(self) -> None:
        if self.kubeconfig is None:
            config.load_incluster_config()
            self.api = client.ApiClient()
        else:
            self.api = await config.new_client_from_config(
                config_file=str(self.kubeconfig), context=self.context
            )
        core = client.CoreV1Api(self.api)
        self.pods = Reflector(
            "pods", core.list_pod_for_all_namespaces, _release_of_pod, label_selector=INSTANCE_LABEL
        )
        self.events = Reflector("events", core.list_event_for_all_namespaces, _object_of_event)
        for reflector in (self.pods, self.events):
            reflector.start()
        try:
            await asyncio.wait_for(
                asyncio.gather(self.pods.first_load.wait(), self.events.first_load.wait()), 30
            )
        except TimeoutError:
            await self.stop()
            raise BackendError(
                f"the Kubernetes API at {self.server} did not answer in 30 s: check the "
                "kubeconfig (backend.kubernetes.kubeconfig) and that the cluster is up"
            ) from None

    async def stop(self) -> None:
        for reflector in (self.pods, self.events):
            if reflector is not None:
                await reflector.stop()
        if self.api is not None:
            await self.api.close()
            self.api = None
            # aiohttp closes TLS connections a moment after its session (its "graceful
            # shutdown"): give them that moment, or their sockets outlive the loop
            await asyncio.sleep(0.25)

    @property
    def server(self) -> str:
        host = self.api.configuration.host if self.api is not None else None
        return host or "(not connected)"

    def _api(self) -> client.ApiClient:
        if self.api is None:
            raise BackendError("the Kubernetes backend is not started")
        return self.api

    # -- what the watches hold -------------------------------------------------------------

    def pods_of(self, namespace: str, release: str) -> list[dict[str, Any]]:
        assert self.pods is not None
        return self.pods.in_group(namespace, release)

    def events_of(self, namespace: str, release: str) -> list[dict[str, Any]]:
        """Events of the namespace about the release's objects (their names start with it,
        as Helm charts name them), oldest first."""
        assert self.events is not None
        found = [
            event
            for name in self.events.group_names(namespace)
            if name.startswith(release)
            for event in self.events.in_group(namespace, name)
        ]
        return sorted(found, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))

    # -- writing ---------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One call to the API on a path (the objects the platform manages are few kinds:
        :data:`PATHS`), its JSON answer as a dict."""
        try:
            answer = await self._api().call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                response_types_map={200: "object", 201: "object"},
                _return_http_data_only=True,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        except (OSError, TimeoutError) as exc:  # aiohttp's connection errors are OSErrors
            raise BackendUnreachable(
                f"the Kubernetes API at {self.server} does not answer "
                f"({type(exc).__name__}: {exc or 'timed out'}); check that the cluster is up "
                "and reachable from the platform (backend.kubernetes.kubeconfig)"
            ) from None
        return answer if isinstance(answer, dict) else {}

    async def apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply (the platform owns these fields; users' own edits elsewhere stay)."""
        metadata = obj["metadata"]
        try:
            await self._request(
                "PATCH",
                _path(obj["kind"], metadata.get("namespace"), metadata["name"]),
                query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                content_type="application/apply-patch+yaml",
                body=obj,
            )
        except ApiException as exc:
            reason = _reason(exc)
            namespace = metadata.get("namespace")
            if exc.status == 403 and "being terminated" in reason:
                raise BackendConflict(
                    f"namespace {namespace!r} is being deleted: launch again once it is gone "
                    f"(kubectl get namespace {namespace})"
                ) from None
            kind, name = obj["kind"], metadata["name"]
            raise BackendError(f"cannot apply {kind} {name!r}: {reason}") from None

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            await self._request("DELETE", _path(kind, namespace, name))
        except ApiException as exc:
            if exc.status != 404:
                raise BackendError(f"cannot delete {kind} {name!r}: {_reason(exc)}") from None

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when there is none."""
        try:
            return await self._request("GET", _path(kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise BackendError(f"cannot read {kind} {name!r}: {_reason(exc)}") from None

    async def exists(self, kind: str, namespace: str | None, name: str) -> bool:
        return await self.get(kind, namespace, name) is not None

    async def names(self, kind: str, namespace: str, label_selector: str) -> list[str]:
        query = [("labelSelector", label_selector)]
        try:
            body = await self._request("GET", _path(kind, namespace), query=query)
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise BackendError(f"cannot list {PATHS[kind][1]}: {_reason(exc)}") from None
        return [item["metadata"]["name"] for item in body.get("items", [])]

    # -- reading ---------------------------------------------------------------------------

    async def logs(
        self, namespace: str, pods: list[str], *, tail: int, follow: bool
    ) -> AsyncIterator[str]:
        """The pods' log lines (the first container of each)."""
        core = client.CoreV1Api(self._api())
        for name in pods:
            try:
                if not follow:
                    text = await core.read_namespaced_pod_log(name, namespace, tail_lines=tail)
                    for line in str(text).splitlines():
                        yield line
                    continue
                # without preloading, the client answers the HTTP response itself (its stubs
                # say str whatever _preload_content is)
                answer = cast(
                    "ClientResponse",
                    await core.read_namespaced_pod_log(
                        name, namespace, tail_lines=tail, follow=True, _preload_content=False
                    ),
                )
                async for raw in answer.content:
                    yield raw.decode(errors="replace").rstrip("\n")
            except ApiException as exc:
                yield f"(no logs from {name}: {_reason(exc)})"

    async def service_address(self, namespace: str, release: str) -> tuple[str, int] | None:
        """The in-cluster address of the release's first Service with a port."""
        core = client.CoreV1Api(self._api())
        try:
            services = await core.list_namespaced_service(
                namespace, label_selector=f"{INSTANCE_LABEL}={release}"
            )
        except ApiException as exc:
            raise BackendError(f"cannot read the services of {release!r}: {_reason(exc)}") from None
        for service in services.items:
            for port in service.spec.ports or []:
                return f"{service.metadata.name}.{namespace}.svc", int(port.port)
        return None


def _path(kind: str, namespace: str | None, name: str | None = None) -> str:
    """Where an object (or, without a name, the list of its kind in a namespace) lives."""
    prefix, plural, namespaced = PATHS[kind]
    where = f"/namespaces/{namespace}" if namespaced and namespace else ""
    return f"{prefix}{where}/{plural}" + (f"/{name}" if name else "")


def _reason(exc: ApiException) -> str:
    import json

    try:
        return str(json.loads(exc.body or b"").get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return f"{exc.status} {exc.reason}"
