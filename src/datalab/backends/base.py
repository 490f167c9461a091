"""The execution-backend contract.

Modelled on JupyterHub's ``Spawner``: one abstract base class with a few async methods and
JSON-serialisable state, so that a restarted platform re-attaches to what is running.

The platform (``datalab.services``) owns the service records in the database. For each
service it hands the backend a :class:`ServiceSpec` (everything needed to run it: resolved
values, chart location, owner, project) and persists the dict returned by
:meth:`Backend.get_state` after every call. After a restart it calls :meth:`Backend.load_state`
with that dict before anything else, so the backend can re-attach to the running workload.

Backends are chosen by configuration, by short name: the ``datalab.backends`` entry points
(:mod:`datalab.backends`; ``local``, and ``memory``, an in-process backend for tests and demos
that runs nothing). Each builds itself from the settings (:meth:`Backend.from_settings`).
"""

from __future__ import annotations

import abc
import builtins
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

# the contract's errors, defined with every other error type in datalab.errors
from datalab.errors import BackendError as BackendError
from datalab.errors import ServiceNotFound as ServiceNotFound

#: the platform's endpoints services are given the address of: object storage (S3 and its STS),
#: the secrets store (Vault API), the platform itself (credential refreshes)
PlatformEndpoint = Literal["s3", "vault", "platform"]

if TYPE_CHECKING:
    from datalab.config import Settings
    from datalab.envs import EnvManager


class Phase(enum.StrEnum):
    """Where a service is in its life. Same words on every backend, in the API and the UI."""

    BUILDING = "building"  # preparing the environment (local venv build, image pull)
    STARTING = "starting"  # process/pod started, waiting for readiness
    RUNNING = "running"  # ready
    FAILED = "failed"  # see ServiceStatus.reason
    SUSPENDED = "suspended"  # stopped, work dir and values kept


@dataclass(frozen=True)
class ServiceSpec:
    """Everything a backend needs to run one service."""

    id: str  # unique across the platform; RFC 1123 label (also the Helm release name)
    owner: str  # user name
    project: str  # project id, e.g. "user-alice" or "project-sandbox"
    catalog_id: str
    chart_name: str
    chart_version: str
    chart_dir: Path  # unpacked chart (Chart.yaml, values.yaml, templates/, and what else a
    # backend reads in it: the local backend its local.yaml)
    values: dict[str, Any]  # resolved, validated values
    namespace: str = ""  # kubernetes namespace, derived from the project by the platform
    #: the service's own identity, as a bearer token: with it, the service reaches the other
    #: services of its project through the platform (e.g. MLflow's MLFLOW_TRACKING_TOKEN)
    token: str = ""


@dataclass
class Event:
    """A state transition or notable happening, with its time."""

    time: datetime
    type: str  # "Normal" or "Warning", as in Kubernetes events
    reason: str  # short CamelCase word: Building, Started, Ready, Failed, Suspended, ...
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time.isoformat(),
            "type": self.type,
            "reason": self.reason,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(
            time=datetime.fromisoformat(data["time"]),
            type=data["type"],
            reason=data["reason"],
            message=data["message"],
        )

    @classmethod
    def now(cls, reason: str, message: str, type: str = "Normal") -> Event:
        return cls(time=datetime.now(UTC), type=type, reason=reason, message=message)


@dataclass
class ServiceStatus:
    phase: Phase
    reason: str | None = None  # why it failed / what it is waiting for
    urls: list[str] = field(default_factory=list)  # where users reach it (through the platform)
    started_at: datetime | None = None
    ready_at: datetime | None = None
    resources: dict[str, Any] = field(default_factory=dict)  # e.g. {"cpu": 1.0, "memory_mb": 2048}
    password: str | None = None  # the service's own password/token, rendered from the chart
    notes: str = ""  # post-install notes (Markdown) rendered from the chart

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "reason": self.reason,
            "urls": list(self.urls),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ready_at": self.ready_at.isoformat() if self.ready_at else None,
            "resources": dict(self.resources),
            "password": self.password,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class Endpoint:
    """Where a service listens, for the platform's reverse proxy (``datalab.proxy``): a Unix
    socket in a directory only the platform and the service's account can enter (nobody else
    on the machine can connect), a loopback TCP port (any local account can), or a host and port
    (a Kubernetes Service, behind the project's NetworkPolicy)."""

    socket: str | None = None
    port: int | None = None
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """The base URL requests to it are made with (the socket is the transport's)."""
        return "http://localhost" if self.socket else f"http://{self.host}:{self.port}"


class Backend(abc.ABC):
    """Runs services. All methods are async; state is JSON-serialisable.

    Implementations must make every method safe to call for a service in any phase, and raise
    :class:`ServiceNotFound` for an id they do not know.
    """

    #: short name used in configuration (its entry point's name)
    name: str = ""

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: Settings) -> Backend:
        """The backend the platform's configuration describes."""

    def unavailable(self, chart_dir: Path, chart_name: str) -> str | None:
        """Why this backend cannot run the chart in ``chart_dir`` (a sentence for its user), or
        None when it can."""
        return None

    def environments(self) -> EnvManager | None:
        """The cache of service environments ("local images") the backend builds, if it has
        one: administrators list and prune it."""
        return None

    @abc.abstractmethod
    async def install(self, spec: ServiceSpec) -> ServiceStatus:
        """Start installing; return quickly (building/starting). Progress shows in status/events."""

    @abc.abstractmethod
    async def status(self, service_id: str) -> ServiceStatus:
        """Current status; also where a backend notices a dead process."""

    @abc.abstractmethod
    def logs(self, service_id: str, *, tail: int = 200, follow: bool = False) -> AsyncIterator[str]:
        """Yield log lines (without trailing newline). With ``follow``, keep yielding new lines."""

    @abc.abstractmethod
    async def events(self, service_id: str) -> list[Event]:
        """State transitions with timestamps, oldest first."""

    @abc.abstractmethod
    async def suspend(self, service_id: str) -> ServiceStatus:
        """Stop the workload, keep its data and values."""

    @abc.abstractmethod
    async def resume(self, service_id: str, values: dict[str, Any] | None = None) -> ServiceStatus:
        """Start a suspended (or failed) service again with the same values, or with
        ``values`` (the same values with renewed credentials)."""

    @abc.abstractmethod
    async def uninstall(self, service_id: str) -> None:
        """Stop the workload and delete its data. Idempotent."""

    @abc.abstractmethod
    async def list(self) -> list[str]:
        """Ids of the services this backend runs or keeps (at start, the platform reports those
        it has no record of)."""

    @abc.abstractmethod
    def get_state(self, service_id: str) -> dict[str, Any]:
        """JSON-serialisable state the platform persists (pid, port, start time, events...)."""

    @abc.abstractmethod
    async def load_state(self, spec: ServiceSpec, state: dict[str, Any]) -> ServiceStatus:
        """Re-attach to a service after a platform restart (or mark it failed if it is gone)."""

    async def endpoint(self, service_id: str) -> Endpoint | None:
        """Where to proxy the service's HTTP/WebSocket traffic; None while it cannot be reached
        (not running) or when the backend exposes it another way (ingress)."""
        return None

    async def internal_url(self, service_id: str) -> str | None:
        """The URL the project's other services reach this one at, with their
        :attr:`ServiceSpec.token` as a bearer (service discovery, e.g. the project's MLflow
        tracking URI); None while it cannot be reached."""
        return None

    def reachable_url(self, endpoint: PlatformEndpoint, url: str) -> str:
        """The address this backend's services reach one of the platform's endpoints at
        (``url``: where the platform reaches it), injected into them. Services running on the
        platform's machine reach it where the platform does; a backend that runs them elsewhere
        answers otherwise, or raises :class:`~datalab.errors.ConfigError` naming the setting."""
        return url

    async def sync_project(self, project_id: str, members: builtins.list[str]) -> None:  # noqa: B027
        """The project's members changed (or the platform started): the backend gives those
        members, and only them, what it gives project members (Kubernetes: access to the
        project's namespace)."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Called once when the platform starts."""

    async def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Called once when the platform stops."""
