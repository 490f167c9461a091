"""The platform's service layer: service records in the database, driven through the execution
backend, with values resolution, quotas and equivalent commands.

Handlers call this module with a :class:`~datalab.identity.access.Principal`; every access to a
service goes through :func:`~datalab.identity.access.check_service`.

The backend is never awaited inside a database transaction (SQLite has one writer: a slow
backend would stall every other write): an operation checks and records in one short
transaction, calls the backend, and records its answer in another. Operations on one service
(install, suspend, resume, delete, and recording its status) run one at a time
(:class:`_ServiceLocks`): a service being installed is suspended or deleted once the backend
knows it, and the status watcher never records an answer older than an operation's.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import copy
import dataclasses
import logging
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from datalab import commands
from datalab.answers import (
    AdminServiceListed,
    EventOut,
    LaunchPreview,
    QuotaOut,
    ServiceDeleted,
    ServiceDetail,
    ServiceListed,
    ServiceOut,
    UsageOut,
)
from datalab.backends.base import Backend, Phase, ServiceSpec, ServiceStatus
from datalab.catalog import CatalogRegistry, Chart
from datalab.config import Settings
from datalab.db import Database, Membership, Project, Service, User
from datalab.errors import (
    BackendConflict,
    BackendError,
    BackendUnreachable,
    Conflict,
    DatalabError,
    ExecutionUnavailable,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    ServiceNotFound,
    Unauthenticated,
)
from datalab.identity import accounts
from datalab.identity.access import (
    Action,
    Principal,
    check_service,
    listed_services_sql,
    may,
    may_see_credentials,
    principal_for,
    services_sql,
)
from datalab.identity.names import check_label
from datalab.masking import mask_secret_values
from datalab.onyxia_context import (
    ContextProject,
    ContextUser,
    GitContext,
    build_context,
    chosen_secret_paths,
)
from datalab.resources import MIB, LimitRule, with_limits
from datalab.values import ResolvedValues, equivalent_commands, resolve_values

if TYPE_CHECKING:
    from datalab.injection import CredentialBroker, Injection

log = logging.getLogger(__name__)

#: Chart.yaml annotation naming what a chart's services provide to the others of the project
DISCOVERY_ANNOTATION = "datalab/discovery"

#: phases that hold resources (counted against quotas)
ACTIVE_PHASES = (Phase.BUILDING.value, Phase.STARTING.value, Phase.RUNNING.value)
#: why the services of a disabled account are suspended (their reason, for administrators)
SUSPENDED_OWNER_DISABLED = "suspended: its owner's account was disabled"


class _ServiceLocks:
    """One lock per service id: operations on a service (and the recording of its status)
    run one at a time. A lock exists only while someone holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._holders: Counter[str] = Counter()  # holding or waiting

    @contextlib.asynccontextmanager
    async def hold(self, service_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(service_id, asyncio.Lock())
        self._holders[service_id] += 1
        try:
            async with lock:
                yield
        finally:
            self._holders[service_id] -= 1
            if not self._holders[service_id]:
                del self._holders[service_id], self._locks[service_id]

    def busy(self, service_id: str) -> bool:
        """Whether an operation runs (or waits to run) on the service."""
        return service_id in self._locks


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

    def shown(self) -> UsageOut:
        """As answers show it: CPU to the thousandth of a core."""
        return UsageOut(services=self.services, cpu=round(self.cpu, 3), memory_mb=self.memory_mb)


class ServiceManager:
    def __init__(
        self, settings: Settings, db: Database, catalogs: CatalogRegistry, backend: Backend
    ) -> None:
        self.settings = settings
        self.db = db
        self.catalogs = catalogs
        self.backend = backend
        self._watcher: asyncio.Task[None] | None = None
        self._locks = _ServiceLocks()
        self.poll_interval_s = 1.0
        self.project_sync_interval_s = 60.0
        # per-launch S3 / Vault credentials; set by the platform when storage or secrets run
        self.credentials: CredentialBroker | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Re-attach to every recorded service, then watch their status."""
        with self.db.session() as session:
            rows = session.scalars(select(Service))
            recorded = [(self._spec(row), row.backend_state) for row in rows]
        loaded: dict[str, ServiceStatus | BackendError] = {}
        for spec, state in recorded:
            try:
                loaded[spec.id] = await self.backend.load_state(spec, state)
            except BackendError as exc:
                loaded[spec.id] = exc
        with self.db.session() as session:
            for row in session.scalars(select(Service).where(Service.id.in_(loaded))):
                status = loaded[row.id]
                if isinstance(status, BackendError):
                    row.phase, row.reason = Phase.FAILED.value, str(status)
                else:
                    self._record(row, status.phase.value, status.reason)
        await self.sync_projects()
        orphans = await self.orphans()
        if orphans:  # the backend runs what the platform has no record of: never deleted here
            log.warning("the backend runs services the platform does not know: %s", orphans)
        self._watcher = asyncio.create_task(self._watch(), name="datalab-service-watcher")

    async def orphans(self) -> list[str]:
        """What the backend runs (Kubernetes: releases labelled as datalab's) that the platform
        has no record of: reported to administrators, never deleted by the platform."""
        running = set(await self.backend.list())
        with self.db.session() as session:
            recorded = set(session.scalars(select(Service.id).where(Service.id.in_(running))))
        return sorted(running - recorded)

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self.refresh_all()

    async def _watch(self) -> None:
        last_sync = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self.refresh_all(only_active=True)
                now = asyncio.get_running_loop().time()
                if now - last_sync >= self.project_sync_interval_s:  # e.g. OIDC groups changed
                    last_sync = now
                    await self.sync_projects()
            except Exception:  # the watcher must survive a transient failure
                log.exception("service status refresh failed")

    async def sync_projects(self, project_ids: Iterable[str] | None = None) -> None:
        """Tell the backend who the members of each project are (enabled accounts only), so
        that it grants them what project members get (Kubernetes: the project's namespace) and
        takes it from everyone else. Called at start, when an admin changes a project's members
        or an account, and periodically (memberships from OIDC groups change at login)."""
        with self.db.session() as session:
            query = select(Project.id)
            if project_ids is not None:
                query = query.where(Project.id.in_(list(project_ids)))
            members: dict[str, list[str]] = {pid: [] for pid in session.scalars(query)}
            rows = session.execute(
                select(Membership.project_id, User.name)
                .join(User, User.id == Membership.user_id)
                .where(Membership.project_id.in_(list(members)), User.disabled.is_(False))
            )
            for project_id, user_name in rows:
                members[project_id].append(user_name)
        for project_id, names in sorted(members.items()):
            try:
                await self.backend.sync_project(project_id, sorted(names))
            except BackendError as exc:  # retried at the next periodic sync
                log.warning("cannot give project %s its members: %s", project_id, exc)

    async def refresh_all(self, only_active: bool = False) -> None:
        """Record what the backend says of every service (of the active ones only); services
        an operation runs on are left to it (it records its own answer)."""
        with self.db.session() as session:
            query = select(Service.id)
            if only_active:
                query = query.where(Service.phase.in_(ACTIVE_PHASES))
            service_ids = list(session.scalars(query))
        for service_id in service_ids:
            if not self._locks.busy(service_id):
                await self._refresh(service_id)

    async def _refresh(self, service_id: str) -> ServiceStatus | None:
        """Read and record what the backend says of a service (None: it does not know it)."""
        async with self._locks.hold(service_id):
            status = await self._status(service_id)
            with self.db.session() as session:
                if (row := session.get(Service, service_id)) is not None:
                    self._record_status(row, status)
        return status

    async def _status(self, service_id: str) -> ServiceStatus | None:
        """What the backend says of a service; None when it does not know it."""
        try:
            return await self.backend.status(service_id)
        except ServiceNotFound:
            return None

    def _record_status(self, row: Service, status: ServiceStatus | None) -> None:
        if status is None:
            self._record(row, Phase.FAILED.value, "the backend no longer knows this service")
        else:
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
                .where(services_sql(principal, Action.USE))
                .where(Service.phase == Phase.RUNNING.value)
                .order_by(Service.created_at.desc())
            ).all()
            candidates = []
            for row in rows:
                try:
                    chart = self.catalogs.get_chart(
                        row.catalog_id, row.chart_name, row.chart_version
                    )
                except DatalabError:  # its catalog is gone
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
        context = build_context(
            ContextUser(
                idep=user.name,
                email=user.email or "",
                lang=user.lang,
                dark_mode=user.theme == "dark" or (user.theme == "system" and user.system_dark),
            ),
            ContextProject(
                id=principal.project_id,
                password=accounts.project_password(session, principal.project_id),
            ),
            self.settings.region.context(),
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

    async def launch(
        self, principal: Principal, request: LaunchRequest
    ) -> ServiceOut | LaunchPreview:
        """Launch a service; with ``request.dry_run``, resolve and validate only."""
        chart = self.catalogs.get_chart(request.catalog_id, request.chart, request.version)
        unavailable = self.backend.unavailable(chart.path, chart.name)
        if unavailable:
            raise InvalidInput(unavailable)
        service_id = self._new_service_id(chart.name, request.name)
        if not request.dry_run:  # a taken name is refused before anything is minted
            with self.db.session() as session:
                _check_name_free(session, service_id)
        injection = None
        if self.credentials is not None and request.dry_run:  # a preview mints nothing
            injection = self.credentials.preview(principal.project_id, placeholders=True)
        elif self.credentials is not None:
            injection = await self.credentials.for_launch(
                principal.name, principal.project_id, service_id
            )
        mlflow = await self._discover_mlflow(principal)
        with self.db.session() as session:
            context = self._context(session, principal, injection, mlflow)
        resolved = resolve_values(chart, context, overrides=request.overrides)
        values, cpu, memory_mb = self._with_limits(resolved.values)
        await self._check_chosen_secrets(principal, values)
        shown = values
        if request.dry_run and request.mask_secrets:
            shown = mask_secret_values(shown, resolved.schema)
        release_commands = equivalent_commands(
            request.catalog_id,
            chart.name,
            chart.version,
            service_id,
            request.overrides,
            shown,
            helm_source=self.catalogs.catalog(request.catalog_id).helm_source(chart),
            namespace=principal.project_id,
            project=principal.project_id,
            shared=request.shared,
            friendly_name=request.friendly_name,
        )
        if request.dry_run:
            return LaunchPreview.model_validate(
                {
                    "dry_run": True,
                    "service": {"id": service_id, "chart": chart.name, "version": chart.version},
                    "values": shown,
                    "resources": {"cpu": cpu, "memory_mb": memory_mb},
                    "commands": release_commands,
                }
            )
        async with self._locks.hold(service_id):
            # the record comes first, counted against the quota while the backend installs
            with self.db.session() as session:
                owner = session.get(User, principal.user_id)
                if owner is None or owner.disabled:
                    raise Unauthenticated("this account is disabled; ask an administrator")
                _check_name_free(session, service_id)
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
                    values=values,
                    overrides=request.overrides,
                    phase=Phase.BUILDING.value,
                    cpu=cpu,
                    memory_mb=memory_mb,
                    backend_state={},
                )
                session.add(row)
                try:
                    session.flush()
                except IntegrityError:  # taken by another platform process just now
                    raise Conflict(_name_taken(service_id)) from None
                spec = self._spec(row, chart)
            try:
                status = await self.backend.install(spec)
            except BaseException as exc:
                with self.db.session() as session:
                    if (added := session.get(Service, service_id)) is not None:
                        session.delete(added)
                if isinstance(exc, BackendUnreachable):
                    raise ExecutionUnavailable(f"cannot start {service_id!r}: {exc}") from None
                if isinstance(exc, BackendConflict):
                    raise Conflict(f"cannot start {service_id!r}: {exc}") from None
                if isinstance(exc, BackendError):
                    raise InvalidInput(f"cannot start {service_id!r}: {exc}") from None
                raise
            with self.db.session() as session:
                row = _row(session, service_id)
                self._record(row, status.phase.value, status.reason)
                result = _with_status(_summary(row), status)
                owner_disabled = row.owner.disabled
            if owner_disabled:  # disabled while this launch ran: it stops at once
                await self._suspend_held(service_id, SUSPENDED_OWNER_DISABLED)
                raise Unauthenticated("this account is disabled; ask an administrator")
        return ServiceOut.model_validate({**result, "commands": release_commands})

    def _with_limits(self, values: dict[str, Any]) -> tuple[dict[str, Any], float, int]:
        """The values with the region's limits where they set none, and what the service
        counts against quotas (:func:`datalab.resources.with_limits`)."""
        region = self.settings.region
        rule = LimitRule(
            default_cpu=region.default_resources.get("cpuLimit") or None,
            default_memory=region.default_resources.get("memoryLimit") or None,
            max_cpu=region.max_resources.cpu,
            max_memory=region.max_resources.memory_mb * MIB,
        )
        try:
            return with_limits(values, rule)
        except BackendError as exc:
            raise InvalidInput(str(exc)) from None

    async def _check_chosen_secrets(self, principal: Principal, values: dict[str, Any]) -> None:
        """The secrets named in ``vault.secret`` (they become environment variables of the
        service at each start) exist and are the caller's: a clear error now rather than a
        service that fails to start."""
        vault = values.get("vault")
        if not isinstance(vault, dict):
            return
        chosen = vault.get("secret")
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
                details={"usage": usage.shown().model_dump(), "quota": quota.model_dump()},
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

    def quota(self, principal: Principal) -> QuotaOut:
        region = self.settings.region
        personal = principal.project_id == f"{region.user_prefix}{principal.name}"
        quota = region.user_quota if personal else region.project_quota
        with self.db.session() as session:
            usage = self._usage(session, principal.project_id)
        return QuotaOut(project=principal.project_id, usage=usage.shown(), limits=quota)

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
            namespace=row.project_id,
            token=self.credentials.service_token(row.owner.name, row.project_id, row.id)
            if self.credentials is not None
            else "",
        )

    # -- reading ------------------------------------------------------------------------------

    async def list(self, principal: Principal) -> list[ServiceListed]:
        """The project's services the principal sees as a member
        (:func:`~datalab.identity.access.listed_services_sql`), from the database only, in one
        query (fast for many services)."""
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
            .where(listed_services_sql(principal))
            .order_by(Service.created_at)
        )
        keys = ("id", "name", "chart", "version", "owner", "shared", "phase", "reason")
        with self.db.session() as session:
            return [
                ServiceListed.model_validate(
                    {**dict(zip(keys, row[:-1], strict=True)), "created_at": row[-1].isoformat()}
                )
                for row in session.execute(query)
            ]

    async def list_all(self, owner: str | None = None) -> builtins.list[AdminServiceListed]:
        """Every service of every project (of one owner), for administrators."""
        query = (
            select(
                Service.id,
                Service.friendly_name,
                Service.chart_name,
                Service.chart_version,
                User.name,
                Service.project_id,
                Service.shared,
                Service.phase,
                Service.reason,
                Service.cpu,
                Service.memory_mb,
                Service.created_at,
            )
            .join(User, Service.owner_id == User.id)
            .order_by(Service.created_at)
        )
        if owner is not None:
            query = query.where(User.name == owner)
        keys = ("id", "name", "chart", "version", "owner", "project", "shared", "phase", "reason")
        with self.db.session() as session:
            return [
                AdminServiceListed.model_validate(
                    {
                        **dict(zip(keys, row[:9], strict=True)),
                        "resources": {"cpu": row[9], "memory_mb": row[10]},
                        "created_at": row[11].isoformat(),
                    }
                )
                for row in session.execute(query)
            ]

    async def get(self, principal: Principal, service_id: str) -> ServiceDetail:
        with self.db.session() as session:
            check_service(principal, session.get(Service, service_id), Action.VIEW)
        if self._locks.busy(service_id):  # being changed: its record says where it is
            status = await self._status(service_id)
        else:
            status = await self._refresh(service_id)
        with self.db.session() as session:
            row = check_service(principal, session.get(Service, service_id), Action.VIEW)
            result = _with_status(_summary(row, with_values=True), status)
            if not may_see_credentials(principal, row):
                schema = self._schema(row)
                result["values"] = mask_secret_values(result["values"], schema)
                result["overrides"] = mask_secret_values(result["overrides"], schema)
            if not may(principal, row, Action.USE):  # an administrator's view: no way in
                result["password"] = None
            project_id = row.project_id
        result["commands"] = {
            action: _for_action(principal, action, service_id, project_id)
            for action in commands.for_service(service_id, project_id)
        }
        return ServiceDetail.model_validate(result)

    def _schema(self, row: Service) -> dict[str, Any]:
        """The chart's values schema ({} when its catalog no longer has it)."""
        try:
            chart = self.catalogs.get_chart(row.catalog_id, row.chart_name, row.chart_version)
        except DatalabError:
            return {}
        return chart.schema or {}

    async def events(self, principal: Principal, service_id: str) -> builtins.list[EventOut]:
        with self.db.session() as session:
            check_service(principal, session.get(Service, service_id), Action.VIEW)
        try:
            return [
                EventOut.model_validate(e.to_json()) for e in await self.backend.events(service_id)
            ]
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

    async def suspend(self, principal: Principal, service_id: str) -> ServiceOut:
        async with self._locks.hold(service_id):
            with self.db.session() as session:
                row = check_service(principal, session.get(Service, service_id), Action.STOP)
                project_id = row.project_id
            result = await self._suspend_held(service_id)
        result.commands = _for_action(principal, "suspend", service_id, project_id)
        return result

    async def _suspend_held(self, service_id: str, reason: str | None = None) -> ServiceOut:
        """Suspend a service whose lock the caller holds; records ``reason`` if given."""
        try:
            status: ServiceStatus | None = await self.backend.suspend(service_id)
        except ServiceNotFound:  # lost by the backend: nothing runs; resuming installs it again
            status = None
        with self.db.session() as session:
            row = _row(session, service_id)
            if status is None:
                self._record(row, Phase.SUSPENDED.value, "the backend no longer knew it")
            else:
                self._record(row, status.phase.value, status.reason)
            if reason is not None:
                row.reason = reason
            return ServiceOut.model_validate(_with_status(_summary(row), status))

    async def resume(self, principal: Principal, service_id: str) -> ServiceOut:
        async with self._locks.hold(service_id):
            with self.db.session() as session:
                row = check_service(principal, session.get(Service, service_id), Action.MANAGE)
                if row.phase in ACTIVE_PHASES:
                    raise Conflict(
                        f"service {service_id!r} is {row.phase}; only a suspended or "
                        "failed service can be resumed"
                    )
                if row.owner.disabled:
                    raise Conflict(
                        f"the account of {row.owner.name!r}, who owns {service_id!r}, is "
                        "disabled; an administrator must enable it before it can be resumed"
                    )
                # services recorded before every service had limits get them now
                values, cpu, memory_mb = self._with_limits(row.values)
                self._check_quota(session, principal, cpu, memory_mb)
                before = (row.phase, row.reason, row.values, row.cpu, row.memory_mb)
                # counted from now on: a launch or resume meanwhile sees it in the usage
                row.phase, row.reason = Phase.STARTING.value, "resuming"
                row.values, row.cpu, row.memory_mb = values, cpu, memory_mb
                project_id = row.project_id
            try:
                renewed = await self._renew_credentials(service_id) or values
                try:
                    status = await self.backend.resume(service_id, renewed)
                except ServiceNotFound:  # lost by the backend: install it again, same values
                    with self.db.session() as session:
                        row = _row(session, service_id)
                        row.values = renewed
                        spec = self._spec(row)
                    status = await self.backend.install(spec)
            except BaseException as exc:
                with self.db.session() as session:
                    row = _row(session, service_id)
                    row.phase, row.reason, row.values, row.cpu, row.memory_mb = before
                if isinstance(exc, BackendError):
                    raise InvalidInput(f"cannot resume {service_id!r}: {exc}") from None
                raise
            with self.db.session() as session:
                row = _row(session, service_id)
                row.values = renewed
                self._record(row, status.phase.value, status.reason)
                result = _with_status(_summary(row), status)
        return ServiceOut.model_validate(
            {**result, "commands": _for_action(principal, "resume", service_id, project_id)}
        )

    async def _renew_credentials(self, service_id: str) -> dict[str, Any] | None:
        """The service's values with fresh credentials (S3 session, Vault token, refresh token)
        in place of the ones minted at launch, which may have expired while it was suspended;
        every other value unchanged. None when nothing is injected or the chart is gone.

        The values that hold credentials are found by resolving the chart once with a marker
        in place of each credential: whatever the chart does with them (a field, an
        ``Authorization`` header, a URL), the values carrying markers get the fresh
        credentials in their place."""
        if self.credentials is None:
            return None
        with self.db.session() as session:
            row = _row(session, service_id)
            try:
                chart = self.catalogs.get_chart(row.catalog_id, row.chart_name, row.chart_version)
            except DatalabError:
                log.warning("service %s: chart gone, credentials not renewed", row.id)
                return None
            owner = principal_for(session, row.owner, row.project_id, "resume")
            values, overrides = copy.deepcopy(row.values), row.overrides
        fresh = await self.credentials.for_launch(owner.name, owner.project_id, service_id)
        marked, credential_of = _with_markers(fresh)
        try:
            with self.db.session() as session:
                context = self._context(session, owner, marked)
            marked_values = resolve_values(chart, context, overrides=overrides).values
        except DatalabError as exc:
            log.warning("service %s: credentials not renewed: %s", service_id, exc)
            return None
        for path, text in _marked_strings(marked_values):
            for marker, credential in credential_of.items():
                text = text.replace(marker, credential)
            _set_path(values, path, text)
        return values

    async def update(
        self,
        principal: Principal,
        service_id: str,
        *,
        friendly_name: str | None = None,
        shared: bool | None = None,
    ) -> ServiceOut:
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
            summary = _summary(row)
        return ServiceOut.model_validate(_with_status(summary, await self._status(service_id)))

    async def delete(self, principal: Principal, service_id: str) -> ServiceDeleted:
        async with self._locks.hold(service_id):
            with self.db.session() as session:
                row = check_service(principal, session.get(Service, service_id), Action.STOP)
                project_id = row.project_id
            await self.backend.uninstall(service_id)
            with self.db.session() as session:
                if (stored := session.get(Service, service_id)) is not None:
                    session.delete(stored)
        return ServiceDeleted(
            deleted=service_id, commands=_for_action(principal, "delete", service_id, project_id)
        )

    # -- accounts ---------------------------------------------------------------------------

    async def disable_user(self, name: str) -> None:
        """Disable an account and end everything it holds: API tokens and web sessions
        (:func:`datalab.identity.accounts.set_disabled`), the Vault tokens minted for it
        (revoked by accessor), its services (suspended). Its S3 sessions cannot be revoked by
        SeaweedFS: they end at their expiry, never refreshed (docs/security.md). Disabling an
        account again finishes what a failure left undone (the secrets store unreachable)."""
        with self.db.session() as session:
            user_id = accounts.set_disabled(session, name, True).id
        try:
            broker = self.credentials
            if broker is not None and broker.secret_store is not None:
                await broker.secret_store.revoke_tokens_of(name)
                broker.secrets.forget(name)
        finally:
            with self.db.session() as session:
                running = list(
                    session.scalars(
                        select(Service.id).where(
                            Service.owner_id == user_id, Service.phase != Phase.SUSPENDED.value
                        )
                    )
                )
            for service_id in running:
                async with self._locks.hold(service_id):
                    with self.db.session() as session:
                        if session.get(Service, service_id) is None:  # deleted meanwhile
                            continue
                    await self._suspend_held(service_id, SUSPENDED_OWNER_DISABLED)
            if running:
                log.info("suspended %d service(s) of disabled account %s", len(running), name)
            await self.sync_projects(self._projects_of(user_id))

    def _projects_of(self, user_id: int) -> builtins.list[str]:
        with self.db.session() as session:
            return list(
                session.scalars(select(Membership.project_id).where(Membership.user_id == user_id))
            )

    async def enable_user(self, name: str) -> None:
        """Enable an account again (its services stay suspended until resumed)."""
        with self.db.session() as session:
            user_id = accounts.set_disabled(session, name, False).id
        await self.sync_projects(self._projects_of(user_id))

    def count(self) -> int:
        with self.db.session() as session:
            return session.scalar(select(func.count(Service.id))) or 0


def _name_taken(service_id: str) -> str:
    # the same answer whoever holds the name: it says nothing of them, nor of their project
    return f"the name {service_id!r} is taken; choose another, or give none to get one"


def _check_name_free(session: Any, service_id: str) -> None:
    """Service ids are the platform's (one process, one URL per service), so a name taken in
    any project is taken; the answer says nothing of the service holding it."""
    if session.get(Service, service_id) is not None:
        raise Conflict(_name_taken(service_id))


def _row(session: Any, service_id: str) -> Service:
    """A service record that an operation holding its lock knows to exist."""
    row = session.get(Service, service_id)
    if row is None:
        raise NotFound("no such service in this project")
    return row


def _summary(row: Service, *, with_values: bool = False) -> dict[str, Any]:
    """A service as the database knows it (inside a transaction: the row's last state)."""
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
        "phase": row.phase,
        "reason": row.reason,
        "urls": [],
    }
    if with_values:
        result["values"] = row.values
        result["overrides"] = row.overrides
    return result


def _with_status(summary: dict[str, Any], status: ServiceStatus | None) -> dict[str, Any]:
    """The summary with what the backend says of the service, when it knows it."""
    return summary if status is None else {**summary, **status.to_json()}


def _for_action(
    principal: Principal, action: str, service_id: str, project_id: str
) -> dict[str, str]:
    """The equivalent commands of an action on a service of ``project_id``, for the principal:
    an administrator acting on another project's service acts from their own project (they
    are not a member of the service's), so their ``datalab`` line names it."""
    found = commands.for_action(action, service_id, project_id)
    if project_id != principal.project_id:
        found["datalab"] = commands.for_action(action, service_id, principal.project_id)["datalab"]
    return found


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
