"""The platform's service layer: service records in the database, driven through the execution
backend, with values resolution, quotas and equivalent commands.

Handlers call this module with a :class:`~datalab.identity.access.Principal`; every access to a
service goes through :func:`~datalab.identity.access.check_service`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from datalab import commands
from datalab.backends.base import Backend, BackendError, Phase, ServiceNotFound, ServiceSpec
from datalab.catalog import CatalogRegistry, Chart
from datalab.config import Settings
from datalab.context import (
    ContextProject,
    ContextUser,
    GitContext,
    KubernetesContext,
    RegionContext,
    build_context,
)
from datalab.db import Database, Service, User
from datalab.errors import Conflict, DatalabError, InvalidInput, NotFound, QuotaExceeded
from datalab.identity.access import (
    Action,
    Principal,
    check_service,
    may_see_credentials,
    principal_for,
)
from datalab.identity.names import check_label
from datalab.launch import ResolvedValues, equivalent_commands, resolve_values
from datalab.masking import mask_secret_values
from datalab.resources import MIB, Resources
from datalab.secrets import chosen_secret_paths

if TYPE_CHECKING:
    from datalab.storage.injection import CredentialBroker, Injection

log = logging.getLogger(__name__)

#: Chart.yaml annotation naming what a chart's services provide to the others of the project
DISCOVERY_ANNOTATION = "datalab/discovery"

#: phases that hold resources (counted against quotas)
ACTIVE_PHASES = (Phase.BUILDING.value, Phase.STARTING.value, Phase.RUNNING.value)


@dataclass
class LaunchRequest:
    catalog_id: str
    chart: str
    version: str | None = None
    name: str | None = None  # service id (release name); generated when missing
    friendly_name: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    shared: bool = False
    dry_run: bool = False
    mask_secrets: bool = False  # dry run: passwords, tokens and keys shown as ********


@dataclass
class Usage:
    services: int
    cpu: float
    memory_mb: int

    def to_json(self) -> dict[str, Any]:
        return {"services": self.services, "cpu": round(self.cpu, 3), "memory_mb": self.memory_mb}


class ServiceManager:
    def __init__(
        self, settings: Settings, db: Database, catalogs: CatalogRegistry, backend: Backend
    ) -> None:
        self.settings = settings
        self.db = db
        self.catalogs = catalogs
        self.backend = backend
        self._watcher: asyncio.Task[None] | None = None
        self.poll_interval_s = 1.0
        # per-launch S3 / Vault credentials; set by the platform when storage or secrets run
        self.credentials: CredentialBroker | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Re-attach to every recorded service, then watch their status."""
        with self.db.session() as session:
            rows = list(session.scalars(select(Service)))
            for row in rows:
                try:
                    status = await self.backend.load_state(self._spec(row), row.backend_state)
                except BackendError as exc:
                    row.phase, row.reason = Phase.FAILED.value, str(exc)
                    continue
                self._record(row, status.phase.value, status.reason)
        self._watcher = asyncio.create_task(self._watch(), name="datalab-service-watcher")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self.refresh_all()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self.refresh_all(only_active=True)
            except Exception:  # the watcher must survive a transient failure
                log.exception("service status refresh failed")

    async def refresh_all(self, only_active: bool = False) -> None:
        with self.db.session() as session:
            query = select(Service)
            if only_active:
                query = query.where(Service.phase.in_(ACTIVE_PHASES))
            for row in session.scalars(query):
                await self._refresh(row)

    async def _refresh(self, row: Service) -> None:
        try:
            status = await self.backend.status(row.id)
        except ServiceNotFound:
            self._record(row, Phase.FAILED.value, "the backend no longer knows this service")
            return
        self._record(row, status.phase.value, status.reason)

    def _record(self, row: Service, phase: str, reason: str | None) -> None:
        row.phase, row.reason = phase, reason
        with contextlib.suppress(ServiceNotFound):
            row.backend_state = self.backend.get_state(row.id)

    # -- launching ----------------------------------------------------------------------------

    async def _discover_mlflow(self, principal: Principal) -> str:
        """The tracking URI of the project's MLflow: the newest running service the caller
        may use whose chart says ``annotations: {datalab/discovery: mlflow}``; else "" (the
        context then falls back to the region's)."""
        with self.db.session() as session:
            rows = session.scalars(
                select(Service)
                .where(Service.project_id == principal.project_id)
                .where(Service.phase == Phase.RUNNING.value)
                .order_by(Service.created_at.desc())
            ).all()
            candidates = []
            for row in rows:
                try:
                    check_service(principal, row, Action.USE)
                    chart = self.catalogs.get_chart(
                        row.catalog_id, row.chart_name, row.chart_version
                    )
                except DatalabError:  # not the caller's to use, or its catalog is gone
                    continue
                annotations = chart.metadata.get("annotations") or {}
                if annotations.get(DISCOVERY_ANNOTATION) == "mlflow":
                    candidates.append(row.id)
        for service_id in candidates:
            with contextlib.suppress(ServiceNotFound):
                url = await self.backend.internal_url(service_id)
                if url:
                    return url
        return ""

    def _context(
        self,
        session: Any,
        principal: Principal,
        injection: Injection | None = None,
        mlflow_tracking_uri: str = "",
    ) -> dict[str, Any]:
        """The x-onyxia injection context of the caller in their project."""
        user = session.get(User, principal.user_id)
        assert user is not None
        region = self.settings.region
        context = build_context(
            ContextUser(idep=user.name, email=user.email or "", lang=user.lang),
            ContextProject(id=principal.project_id),
            RegionContext(
                id=region.id,
                allowed_uri_pattern=region.allowed_init_script_pattern,
                custom_values=region.custom_values,
                resources=region.default_resources,
                kubernetes=KubernetesContext(domain=region.domain),
            ),
            git=GitContext(
                name=user.git_name or user.name,
                email=user.git_email or user.email or "",
                token=user.git_token or "",
            ),
            s3=injection.s3 if injection else None,
            vault=injection.vault if injection else None,
            mlflow_tracking_uri=mlflow_tracking_uri,
        )
        return context

    async def resolve(
        self,
        principal: Principal,
        catalog_id: str,
        chart_name: str,
        version: str | None,
        overrides: dict[str, Any] | None = None,
    ) -> tuple[Chart, ResolvedValues]:
        """The chart's values for the caller as a launch would resolve them, with the S3 and
        Vault sections enabled as at launch but no credentials minted."""
        chart = self.catalogs.get_chart(catalog_id, chart_name, version)
        injection = None
        if self.credentials is not None:
            injection = self.credentials.preview(principal.project_id)
        mlflow = await self._discover_mlflow(principal)
        with self.db.session() as session:
            context = self._context(session, principal, injection, mlflow)
        return chart, resolve_values(chart, context, overrides=overrides or {})

    async def launch(self, principal: Principal, request: LaunchRequest) -> dict[str, Any]:
        chart = self.catalogs.get_chart(request.catalog_id, request.chart, request.version)
        if self.backend.name == "local" and not chart.runs_locally:
            raise InvalidInput(
                f"chart {chart.name!r} has no local recipe (local.yaml), so it cannot run on the "
                "local backend; it needs the kubernetes backend"
            )
        service_id = self._new_service_id(chart.name, request.name)
        injection = None
        if self.credentials is not None:
            injection = await self.credentials.for_launch(
                principal.name, principal.project_id, service_id
            )
        mlflow = await self._discover_mlflow(principal)
        with self.db.session() as session:
            context = self._context(session, principal, injection, mlflow)
        resolved = resolve_values(chart, context, overrides=request.overrides)
        await self._check_chosen_secrets(principal, resolved.values)
        cpu, memory_mb = counted_resources(resolved.values)
        shown = resolved.values
        if request.dry_run and request.mask_secrets:
            shown = mask_secret_values(shown, resolved.schema)
        release_commands = equivalent_commands(
            request.catalog_id,
            chart.name,
            chart.version,
            service_id,
            request.overrides,
            shown,
            repo_url=self.catalogs.catalog(request.catalog_id).config.location,
            namespace=principal.project_id,
            project=principal.project_id,
            shared=request.shared,
            friendly_name=request.friendly_name,
        )
        if request.dry_run:
            return {
                "dry_run": True,
                "service": {"id": service_id, "chart": chart.name, "version": chart.version},
                "values": shown,
                "resources": {"cpu": cpu, "memory_mb": memory_mb},
                "commands": release_commands,
            }
        with self.db.session() as session:
            if session.get(Service, service_id) is not None:
                raise Conflict(
                    f"a service named {service_id!r} already exists; choose another name"
                )
            self._check_quota(session, principal, cpu, memory_mb)
            row = Service(
                id=service_id,
                project_id=principal.project_id,
                owner_id=principal.user_id,
                friendly_name=request.friendly_name or chart.name,
                catalog_id=request.catalog_id,
                chart_name=chart.name,
                chart_version=chart.version,
                shared=request.shared,
                values=resolved.values,
                overrides=request.overrides,
                phase=Phase.BUILDING.value,
                cpu=cpu,
                memory_mb=memory_mb,
                backend_state={},
            )
            session.add(row)
            session.flush()
            try:
                status = await self.backend.install(self._spec(row, chart))
            except BackendError as exc:
                session.rollback()
                raise InvalidInput(f"cannot start {service_id!r}: {exc}") from None
            self._record(row, status.phase.value, status.reason)
            result = await self._describe(row)
        result["commands"] = release_commands
        return result

    async def _check_chosen_secrets(self, principal: Principal, values: dict[str, Any]) -> None:
        """The secrets named in ``vault.secret`` (they become environment variables of the
        service at each start) exist and are the caller's: a clear error now rather than a
        service that fails to start."""
        vault = values.get("vault")
        chosen = vault.get("secret") if isinstance(vault, dict) else None
        if not isinstance(chosen, str) or not chosen.strip():
            return
        paths = chosen_secret_paths(chosen)
        if self.credentials is None or self.credentials.secret_store is None:
            raise InvalidInput(
                "vault.secret names secrets, but this platform has no secrets store; "
                "leave vault.secret empty"
            )
        if not vault.get("enabled", True):
            raise InvalidInput("vault.secret names secrets but vault.enabled is false")
        for path in paths:
            try:
                await self.credentials.secrets.read(principal, path)
            except NotFound:
                raise InvalidInput(
                    f"vault.secret: there is no secret {path!r}; create it (datalab secrets "
                    "set) or pick one of yours (datalab secrets ls)"
                ) from None

    def _new_service_id(self, chart_name: str, name: str | None) -> str:
        if name:
            return check_label(name, "service name")
        base = chart_name[:52].rstrip("-")
        return f"{base}-{secrets.token_hex(3)}"

    def _check_quota(self, session: Any, principal: Principal, cpu: float, memory_mb: int) -> None:
        region = self.settings.region
        personal = principal.project_id == f"{region.user_prefix}{principal.name}"
        quota = region.user_quota if personal else region.project_quota
        usage = self._usage(session, principal.project_id)
        problems = []
        if quota.max_services is not None and usage.services + 1 > quota.max_services:
            problems.append(f"services: {usage.services} running of {quota.max_services} allowed")
        if quota.cpu is not None and usage.cpu + cpu > quota.cpu + 1e-9:
            problems.append(f"CPU: {usage.cpu:g} in use + {cpu:g} asked > {quota.cpu:g} cores")
        if quota.memory_mb is not None and usage.memory_mb + memory_mb > quota.memory_mb:
            problems.append(
                f"memory: {usage.memory_mb} MiB in use + {memory_mb} MiB asked > "
                f"{quota.memory_mb} MiB"
            )
        if problems:
            raise QuotaExceeded(
                f"quota of {principal.project_id!r} exceeded ({'; '.join(problems)}); suspend or "
                "delete a service, or ask for smaller resources",
                details={"usage": usage.to_json(), "quota": quota.model_dump()},
            )

    def _usage(self, session: Any, project_id: str) -> Usage:
        count, cpu, memory = session.execute(
            select(
                func.count(Service.id),
                func.coalesce(func.sum(Service.cpu), 0.0),
                func.coalesce(func.sum(Service.memory_mb), 0),
            ).where(Service.project_id == project_id, Service.phase.in_(ACTIVE_PHASES))
        ).one()
        return Usage(services=count, cpu=float(cpu), memory_mb=int(memory))

    def quota(self, principal: Principal) -> dict[str, Any]:
        region = self.settings.region
        personal = principal.project_id == f"{region.user_prefix}{principal.name}"
        quota = region.user_quota if personal else region.project_quota
        with self.db.session() as session:
            usage = self._usage(session, principal.project_id)
        return {
            "project": principal.project_id,
            "usage": usage.to_json(),
            "limits": quota.model_dump(),
        }

    def _spec(self, row: Service, chart: Chart | None = None) -> ServiceSpec:
        if chart is None:
            chart = self.catalogs.get_chart(row.catalog_id, row.chart_name, row.chart_version)
        return ServiceSpec(
            id=row.id,
            owner=row.owner.name,
            project=row.project_id,
            catalog_id=row.catalog_id,
            chart_name=row.chart_name,
            chart_version=row.chart_version,
            chart_dir=chart.path,
            values=row.values,
            local_recipe=chart.local_recipe,
            namespace=row.project_id,
            token=self.credentials.service_token(row.owner.name, row.project_id, row.id)
            if self.credentials is not None
            else "",
        )

    # -- reading ------------------------------------------------------------------------------

    async def _describe(self, row: Service, *, with_values: bool = False) -> dict[str, Any]:
        try:
            status = (await self.backend.status(row.id)).to_json()
        except ServiceNotFound:
            status = {"phase": row.phase, "reason": row.reason, "urls": []}
        result: dict[str, Any] = {
            "id": row.id,
            "name": row.friendly_name,
            "catalog": row.catalog_id,
            "chart": row.chart_name,
            "version": row.chart_version,
            "project": row.project_id,
            "owner": row.owner.name,
            "shared": row.shared,
            "created_at": row.created_at.isoformat(),
            "resources": {"cpu": row.cpu, "memory_mb": row.memory_mb},
            **status,
        }
        if with_values:
            result["values"] = row.values
            result["overrides"] = row.overrides
        return result

    async def list(self, principal: Principal) -> list[dict[str, Any]]:
        """Listing view, from the database only, in one query (fast for many services)."""
        query = (
            select(
                Service.id,
                Service.friendly_name,
                Service.chart_name,
                Service.chart_version,
                User.name,
                Service.shared,
                Service.phase,
                Service.reason,
                Service.created_at,
            )
            .join(User, Service.owner_id == User.id)
            .where(Service.project_id == principal.project_id)
            .where((Service.owner_id == principal.user_id) | Service.shared.is_(True))
            .order_by(Service.created_at)
        )
        keys = ("id", "name", "chart", "version", "owner", "shared", "phase", "reason")
        with self.db.session() as session:
            return [
                {**dict(zip(keys, row[:-1], strict=True)), "created_at": row[-1].isoformat()}
                for row in session.execute(query)
            ]

    async def get(self, principal: Principal, service_id: str) -> dict[str, Any]:
        with self.db.session() as session:
            row = check_service(principal, session.get(Service, service_id), Action.VIEW)
            await self._refresh(row)
            result = await self._describe(row, with_values=True)
            if not may_see_credentials(principal, row):
                schema = self._schema(row)
                result["values"] = mask_secret_values(result["values"], schema)
                result["overrides"] = mask_secret_values(result["overrides"], schema)
        result["commands"] = commands.for_service(row.id, row.project_id)
        return result

    def _schema(self, row: Service) -> dict[str, Any]:
        """The chart's values schema ({} when its catalog no longer has it)."""
        try:
            chart = self.catalogs.get_chart(row.catalog_id, row.chart_name, row.chart_version)
        except DatalabError:
            return {}
        return chart.schema or {}

    async def events(self, principal: Principal, service_id: str) -> list[dict[str, Any]]:
        with self.db.session() as session:
            check_service(principal, session.get(Service, service_id), Action.VIEW)
        try:
            return [e.to_json() for e in await self.backend.events(service_id)]
        except ServiceNotFound:
            return []

    def logs(
        self, principal: Principal, service_id: str, *, tail: int, follow: bool
    ) -> AsyncIterator[str]:
        with self.db.session() as session:
            check_service(principal, session.get(Service, service_id), Action.USE)
        return self.backend.logs(service_id, tail=tail, follow=follow)

    def check_access(self, principal: Principal, service_id: str, action: Action) -> Service:
        with self.db.session() as session:
            return check_service(principal, session.get(Service, service_id), action)

    # -- changing -----------------------------------------------------------------------------

    async def suspend(self, principal: Principal, service_id: str) -> dict[str, Any]:
        with self.db.session() as session:
            row = check_service(principal, session.get(Service, service_id), Action.MANAGE)
            status = await self.backend.suspend(service_id)
            self._record(row, status.phase.value, status.reason)
            result = await self._describe(row)
        result["commands"] = commands.for_action("suspend", service_id, row.project_id)
        return result

    async def resume(self, principal: Principal, service_id: str) -> dict[str, Any]:
        with self.db.session() as session:
            row = check_service(principal, session.get(Service, service_id), Action.MANAGE)
            if row.phase in ACTIVE_PHASES:
                raise Conflict(
                    f"service {service_id!r} is {row.phase}; only a suspended or "
                    "failed service can be resumed"
                )
            self._check_quota(session, principal, row.cpu, row.memory_mb)
            renewed = await self._renew_credentials(session, row)
            try:
                status = await self.backend.resume(service_id, renewed)
            except ServiceNotFound:  # lost by the backend: install it again with the same values
                status = await self.backend.install(self._spec(row))
            self._record(row, status.phase.value, status.reason)
            result = await self._describe(row)
        result["commands"] = commands.for_action("resume", service_id, row.project_id)
        return result

    async def _renew_credentials(self, session: Any, row: Service) -> dict[str, Any] | None:
        """The service's values with fresh credentials (S3 session, Vault token, refresh token)
        in place of the ones minted at launch, which may have expired while it was suspended;
        every other value unchanged. None when nothing is injected or the chart is gone.

        The values that hold credentials are found by resolving the chart once with a marker
        in place of each credential: whatever the chart does with them (a field, an
        ``Authorization`` header, a URL), the values carrying markers get the fresh
        credentials in their place."""
        if self.credentials is None:
            return None
        try:
            chart = self.catalogs.get_chart(row.catalog_id, row.chart_name, row.chart_version)
        except DatalabError:
            log.warning("service %s: chart gone, credentials not renewed", row.id)
            return None
        owner = principal_for(session, row.owner, row.project_id, "resume")
        fresh = await self.credentials.for_launch(row.owner.name, row.project_id, row.id)
        marked, credential_of = _with_markers(fresh)
        try:
            marked_values = resolve_values(
                chart, self._context(session, owner, marked), overrides=row.overrides
            ).values
        except DatalabError as exc:
            log.warning("service %s: credentials not renewed: %s", row.id, exc)
            return None
        values = copy.deepcopy(row.values)
        for path, text in _marked_strings(marked_values):
            for marker, credential in credential_of.items():
                text = text.replace(marker, credential)
            _set_path(values, path, text)
        row.values = values
        return values

    async def update(
        self,
        principal: Principal,
        service_id: str,
        *,
        friendly_name: str | None = None,
        shared: bool | None = None,
    ) -> dict[str, Any]:
        """Rename and share change metadata only."""
        with self.db.session() as session:
            row = check_service(principal, session.get(Service, service_id), Action.MANAGE)
            if friendly_name is not None:
                if not friendly_name.strip():
                    raise InvalidInput("name must not be empty")
                row.friendly_name = friendly_name.strip()
            if shared is not None:
                if shared and row.project.personal_of is not None:
                    raise InvalidInput(
                        "services in a personal project cannot be shared; launch it in a shared "
                        "project (X-Datalab-Project) to share it"
                    )
                row.shared = shared
            return await self._describe(row)

    async def delete(self, principal: Principal, service_id: str) -> dict[str, Any]:
        with self.db.session() as session:
            row = check_service(principal, session.get(Service, service_id), Action.MANAGE)
            await self.backend.uninstall(service_id)
            project_id = row.project_id
            session.delete(row)
        return {
            "deleted": service_id,
            "commands": commands.for_action("delete", service_id, project_id),
        }

    def count(self) -> int:
        with self.db.session() as session:
            return session.scalar(select(func.count(Service.id))) or 0


def counted_resources(values: dict[str, Any]) -> tuple[float, int]:
    """(cores, MiB) counted against quotas: the limits, else the requests, parsed exactly as
    the local backend enforces them."""
    try:
        resources = Resources.from_values(values)
    except BackendError as exc:
        raise InvalidInput(str(exc)) from None
    cpu = resources.cpu_limit if resources.cpu_limit is not None else resources.cpu_request
    memory = (
        resources.memory_limit if resources.memory_limit is not None else resources.memory_request
    )
    return cpu or 0.0, round((memory or 0) / MIB)


_MARKER = "\x00datalab-credential-"


def _with_markers(injection: Injection) -> tuple[Injection, dict[str, str]]:
    """The injection with a distinct marker in place of each credential, and the credential
    each marker stands for."""
    credential_of: dict[str, str] = {}

    def marker(credential: str) -> str:
        if not credential:
            return ""
        mark = f"{_MARKER}{len(credential_of)}\x00"
        credential_of[mark] = credential
        return mark

    s3, vault = injection.s3, injection.vault
    if s3 is not None:
        s3 = dataclasses.replace(
            s3,
            access_key_id=marker(s3.access_key_id),
            secret_access_key=marker(s3.secret_access_key),
            session_token=marker(s3.session_token),
            credentials_authorization=marker(s3.credentials_authorization),
        )
    if vault is not None:
        vault = dataclasses.replace(vault, token=marker(vault.token))
    return dataclasses.replace(injection, s3=s3, vault=vault), credential_of


def _marked_strings(values: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """``(path, text)`` of every string of ``values`` that carries a credential marker."""
    if isinstance(values, dict):
        return [m for key, value in values.items() for m in _marked_strings(value, (*path, key))]
    if isinstance(values, list):
        return [m for i, value in enumerate(values) for m in _marked_strings(value, (*path, i))]
    return [(path, values)] if isinstance(values, str) and _MARKER in values else []


def _set_path(values: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        values = values[part]
    values[path[-1]] = value
