"""The Kubernetes execution backend: each service is a Helm release of its chart in its
project's namespace (``user-alice``, ``project-team``). See ``docs/kubernetes.md``.

- Namespaces are made on first use, labelled as datalab's, with the project's ResourceQuota,
  a default NetworkPolicy and its members' RoleBindings (:mod:`.manifests`).
- Releases are ordinary Helm releases (:mod:`.helm`): ``helm list -n user-alice`` shows them;
  suspend and resume follow Onyxia's convention (``global.suspend``), as a Helm upgrade that
  keeps the values.
- Status comes from watches (:mod:`.cluster`), never one API call per service; phases and
  reasons from the pods and events (:mod:`.status`).
- The JSON state (namespace, release, revision, suspended) lets a restarted platform
  re-attach; releases labelled as datalab's that the platform has no record of are reported.
"""

from __future__ import annotations

import builtins
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from datalab.backends.base import (
    Backend,
    BackendError,
    Endpoint,
    Event,
    PlatformEndpoint,
    ServiceNotFound,
    ServiceSpec,
    ServiceStatus,
)
from datalab.backends.kubernetes import manifests
from datalab.backends.kubernetes.cluster import Cluster
from datalab.backends.kubernetes.helm import Releases
from datalab.backends.kubernetes.status import release_phase
from datalab.config import KubernetesSettings, Quota, Settings
from datalab.errors import ConfigError
from datalab.resources import Resources

ENDPOINT_NAMES = {"s3": "object storage", "vault": "the secrets store", "platform": "the platform"}

SUSPEND_KEY = "suspend"  # Onyxia's charts scale their workloads to 0 when global.suspend is true


@dataclass
class _Release:
    spec: ServiceSpec
    revision: int = 0
    suspended: bool = False
    failure: str | None = None
    manifest: str = ""
    events: list[Event] = field(default_factory=list)
    started_at: datetime | None = None


class KubernetesBackend(Backend):
    name = "kubernetes"

    def __init__(
        self,
        settings: KubernetesSettings,
        *,
        quota_of: Callable[[str], Quota],
        service_url: Callable[[str], str],
        personal_prefix: str = "user-",
    ) -> None:
        """``quota_of(project_id)``: the region's quota for that project. ``service_url(id)``:
        where users open a service (its own origin, through the platform's gateway, in proxy
        mode)."""
        self.settings = settings
        self.quota_of = quota_of
        self.service_url = service_url
        self.personal_prefix = personal_prefix
        self.cluster = Cluster(settings.kubeconfig, settings.context)
        self.helm = Releases(settings.kubeconfig, settings.context)
        self._releases: dict[str, _Release] = {}
        self._members: dict[str, frozenset[str]] = {}  # project -> members, as the platform says
        self._applied: dict[str, frozenset[str]] = {}  # project -> members bound in its namespace

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesBackend:
        region = settings.region

        def quota_of(project_id: str) -> Quota:
            personal = project_id.startswith(region.user_prefix)
            return region.user_quota if personal else region.project_quota

        return cls(
            settings.backend.kubernetes,
            quota_of=quota_of,
            service_url=settings.service_url,
            personal_prefix=region.user_prefix,
        )

    async def start(self) -> None:
        await self.cluster.start()

    async def shutdown(self) -> None:
        await self.cluster.stop()

    def reachable_url(self, endpoint: PlatformEndpoint, url: str) -> str:
        """Pods reach the configured address (``backend.kubernetes.service_urls``), else the
        platform's own when it is not on loopback, which no pod can reach."""
        configured = getattr(self.settings.service_urls, endpoint)
        if configured:
            return str(configured).rstrip("/")
        if _on_loopback(url):
            raise ConfigError(
                f"{ENDPOINT_NAMES[endpoint]} is at {url}, on the platform's loopback, which pods "
                f"in the cluster cannot reach: set backend.kubernetes.service_urls.{endpoint} to "
                'the address pods reach it at (docs/kubernetes.md, "Credentials in pods")'
            )
        return url

    def unavailable(self, chart_dir: Path, chart_name: str) -> str | None:
        if not (chart_dir / "templates").is_dir():
            return f"chart {chart_name!r} has no templates: it cannot run on Kubernetes"
        return None

    # -- projects -----------------------------------------------------------------------------

    async def _apply_project(self, project_id: str, members: frozenset[str]) -> None:
        """The namespace and its objects (quota, network policy, one RoleBinding per member),
        applied server-side: applying again converges."""
        quota = self.quota_of(project_id)
        pull_secrets = [await self._pull_secret(name) for name in self.settings.image_pull_secrets]
        for obj in manifests.project_objects(
            project_id,
            members,
            cpu=quota.cpu,
            memory_mb=quota.memory_mb,
            max_services=quota.max_services,
            platform_namespace=self.settings.platform_namespace,
            ingress_namespace=self.settings.ingress_namespace,
            subject_prefix=self.settings.rbac_user_prefix,
            pull_secrets=pull_secrets,
        ):
            await self.cluster.apply(obj)
        self._applied[project_id] = members

    async def _pull_secret(self, name: str) -> dict[str, Any]:
        """A registry Secret of the platform's namespace (backend.kubernetes.image_pull_secrets)."""
        namespace = self.settings.platform_namespace
        secret = await self.cluster.get("Secret", namespace, name)
        if secret is None:
            raise BackendError(
                f"the image pull secret {name!r} (backend.kubernetes.image_pull_secrets) is not "
                f"in namespace {namespace!r}: create it there (kubectl create secret "
                f"docker-registry {name} -n {namespace} ...) or remove it from the setting"
            )
        return secret

    async def _ensure_project(self, project_id: str, owner: str) -> None:
        """Made on first use, with the members the platform last gave (and the launching
        owner, a member by definition)."""
        members = self._members.get(project_id, frozenset()) | {owner}
        if not self._applied.get(project_id, frozenset()) >= members:
            await self._apply_project(project_id, members)

    async def sync_project(self, project_id: str, members: list[str]) -> None:
        """Bind the members, unbind everyone else (a removed member loses kubectl at once).
        A project whose namespace does not exist yet is only remembered: its namespace is made
        when it is first used."""
        wanted = frozenset(members)
        if (
            self._members.get(project_id) == wanted
            and self._applied.get(project_id, wanted) == wanted
        ):
            return  # unchanged: bound already, or its namespace is still to be made
        self._members[project_id] = wanted
        if project_id not in self._applied and not await self.cluster.exists(
            "Namespace", None, project_id
        ):
            return
        bound = await self.cluster.names(
            "RoleBinding",
            project_id,
            f"{manifests.MEMBER_LABEL},app.kubernetes.io/managed-by=datalab",
        )
        keep = {manifests.member_binding_name(user) for user in wanted}
        for name in bound:
            if name not in keep:
                await self.cluster.delete("RoleBinding", project_id, name)
        await self._apply_project(project_id, wanted)

    # -- the contract -------------------------------------------------------------------------

    async def install(self, spec: ServiceSpec) -> ServiceStatus:
        if spec.id in self._releases:
            raise BackendError(f"service {spec.id!r} is already installed")
        Resources.from_values(spec.values)  # the same validation as the other backends
        await self._ensure_project(spec.namespace, spec.owner)
        record = _Release(spec=spec, started_at=datetime.now(UTC))
        record.events.append(Event.now("Installing", f"helm install {spec.id} -n {spec.namespace}"))
        self._releases[spec.id] = record
        try:
            release = await self.helm.install(spec.namespace, spec.id, spec.chart_dir, spec.values)
        except BackendError:
            self._releases.pop(spec.id, None)
            raise
        self._took(record, release, "Installed")
        return self._status(record)

    async def status(self, service_id: str) -> ServiceStatus:
        return self._status(self._get(service_id))

    async def logs(
        self, service_id: str, *, tail: int = 200, follow: bool = False
    ) -> AsyncIterator[str]:
        record = self._get(service_id)
        pods = [
            str(pod["metadata"]["name"])
            for pod in self.cluster.pods_of(record.spec.namespace, service_id)
        ]
        if not pods:
            yield f"(no pods: the service is {self._status(record).phase.value})"
            return
        async for line in self.cluster.logs(record.spec.namespace, pods, tail=tail, follow=follow):
            yield line

    async def events(self, service_id: str) -> list[Event]:
        record = self._get(service_id)
        cluster_events = [
            Event(
                time=_time(event.get("lastTimestamp") or event.get("eventTime")),
                type=str(event.get("type") or "Normal"),
                reason=str(event.get("reason") or ""),
                message=str(event.get("message") or ""),
            )
            for event in self.cluster.events_of(record.spec.namespace, service_id)
        ]
        return sorted([*record.events, *cluster_events], key=lambda e: e.time)

    async def suspend(self, service_id: str) -> ServiceStatus:
        record = self._get(service_id)
        if not record.suspended:
            await self._upgrade_suspended(record, True, "Suspended")
        return self._status(record)

    async def resume(self, service_id: str, values: dict[str, Any] | None = None) -> ServiceStatus:
        record = self._get(service_id)
        if values is not None:
            record.spec = ServiceSpec(**{**record.spec.__dict__, "values": values})
        await self._upgrade_suspended(record, False, "Resumed")
        record.started_at = datetime.now(UTC)
        return self._status(record)

    async def _upgrade_suspended(self, record: _Release, suspended: bool, reason: str) -> None:
        """``helm upgrade`` the release with ``suspend`` set (or not) in its values."""
        release = await self.helm.upgrade(
            record.spec.namespace,
            record.spec.id,
            record.spec.chart_dir,
            _with_suspend(record.spec.values, suspended),
            "datalab suspend" if suspended else "datalab resume",
        )
        record.suspended = suspended
        self._took(record, release, reason)

    async def uninstall(self, service_id: str) -> None:
        record = self._releases.pop(service_id, None)
        if record is not None:
            await self.helm.uninstall(record.spec.namespace, service_id)

    async def list(self) -> list[str]:
        """The services known here and every release labelled as datalab's in the cluster
        (orphans included: the platform reports those it has no record of)."""
        found = {name for _, name in await self.helm.names()}
        return sorted(found | set(self._releases))

    def get_state(self, service_id: str) -> dict[str, Any]:
        record = self._get(service_id)
        return {
            "namespace": record.spec.namespace,
            "release": service_id,
            "revision": record.revision,
            "suspended": record.suspended,
            "failure": record.failure,
            "started_at": record.started_at.isoformat() if record.started_at else None,
        }

    async def load_state(self, spec: ServiceSpec, state: dict[str, Any]) -> ServiceStatus:
        record = _Release(
            spec=spec,
            revision=int(state.get("revision") or 0),
            suspended=bool(state.get("suspended")),
            failure=state.get("failure"),
            started_at=_time(state["started_at"]) if state.get("started_at") else None,
        )
        self._releases[spec.id] = record
        release = await self.helm.status(spec.namespace, spec.id)
        if release is None:
            record.failure = "the release is gone from the cluster (deleted outside the platform?)"
        else:
            self._took(record, release, "Reattached")
        return self._status(record)

    async def endpoint(self, service_id: str) -> Endpoint | None:
        record = self._get(service_id)
        if self.settings.access != "proxy" or record.suspended:
            return None
        address = await self.cluster.service_address(record.spec.namespace, service_id)
        return Endpoint(host=address[0], port=address[1]) if address else None

    async def internal_url(self, service_id: str) -> str | None:
        """The release's Service in the cluster, whichever way users reach it."""
        record = self._get(service_id)
        if record.suspended:
            return None
        address = await self.cluster.service_address(record.spec.namespace, service_id)
        return f"{Endpoint(host=address[0], port=address[1]).url}/" if address else None

    # -- records ------------------------------------------------------------------------------

    def _get(self, service_id: str) -> _Release:
        try:
            return self._releases[service_id]
        except KeyError:
            raise ServiceNotFound(f"unknown service {service_id!r}") from None

    def _took(self, record: _Release, release: dict[str, Any], reason: str) -> None:
        """Record what Helm answered (helm-python-sdk's release: name, namespace, revision,
        status, manifest, ...)."""
        record.revision = int(release.get("revision") or record.revision)
        record.manifest = str(release.get("manifest") or record.manifest)
        status = str(release.get("status") or "")
        record.failure = f"the Helm release is {status}" if status == "failed" else None
        record.events.append(Event.now(reason, f"revision {record.revision}: {status}"))

    def _status(self, record: _Release) -> ServiceStatus:
        namespace, release = record.spec.namespace, record.spec.id
        phase, reason = release_phase(
            self.cluster.pods_of(namespace, release),
            self.cluster.events_of(namespace, release),
            suspended=record.suspended,
            release_failure=record.failure,
        )
        return ServiceStatus(
            phase=phase,
            reason=reason,
            urls=self._urls(record),
            started_at=record.started_at,
            ready_at=None,
            resources=Resources.from_values(record.spec.values).to_status(),
        )

    def _urls(self, record: _Release) -> builtins.list[str]:
        if self.settings.access == "proxy":
            return [self.service_url(record.spec.id)]
        return _ingress_urls(record.manifest)


def _with_suspend(values: dict[str, Any], suspended: bool) -> dict[str, Any]:
    global_values = values.get("global")
    global_values = global_values if isinstance(global_values, dict) else {}
    return {**values, "global": {**global_values, SUSPEND_KEY: suspended}}


def _ingress_urls(manifest: str) -> list[str]:
    """The hosts of the release's Ingresses (https when they have TLS)."""
    urls = []
    with contextlib.suppress(yaml.YAMLError):
        for document in yaml.safe_load_all(manifest):
            if not isinstance(document, dict) or document.get("kind") != "Ingress":
                continue
            spec = document.get("spec") or {}
            tls_hosts = {h for t in spec.get("tls") or [] for h in t.get("hosts") or []}
            for rule in spec.get("rules") or []:
                host = rule.get("host")
                if host:
                    urls.append(f"{'https' if host in tls_hosts else 'http'}://{host}/")
    return urls


def _time(value: Any) -> datetime:
    if not value:
        return datetime.now(UTC)
    text = str(value).replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return datetime.now(UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _on_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
