"""An in-process backend that RUNS NOTHING: for tests and demos of the platform only.

Every service goes straight to ``running``; its "logs" are a line saying so. It keeps the
full contract (phases, events, state round-trip) so that the API, the CLI and the UI can be
exercised without starting processes. Never use it to serve real users.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from datalab.backends.base import Backend, Event, Phase, ServiceSpec, ServiceStatus
from datalab.config import Settings
from datalab.errors import ServiceNotFound
from datalab.resources import Resources


@dataclass
class _Record:
    spec: ServiceSpec
    phase: Phase = Phase.RUNNING
    started_at: datetime | None = None
    events: list[Event] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


class MemoryBackend(Backend):
    """Pretends to run services; keeps their records in memory. Insecure by design: runs nothing."""

    name = "memory"

    def __init__(self, service_url: Callable[[str], str] | None = None) -> None:
        # where users would open a service (Settings.service_url): shown, as the real
        # backends do, while it "runs"; nothing answers there
        self.service_url = service_url
        self._records: dict[str, _Record] = {}
        self.project_members: dict[str, list[str]] = {}  # what sync_project was last told

    async def sync_project(self, project_id: str, members: list[str]) -> None:
        self.project_members[project_id] = list(members)

    @classmethod
    def from_settings(cls, settings: Settings) -> MemoryBackend:
        return cls(service_url=settings.service_url)

    def _get(self, service_id: str) -> _Record:
        try:
            return self._records[service_id]
        except KeyError:
            raise ServiceNotFound(f"unknown service {service_id!r}") from None

    def _run(self, record: _Record, reason: str) -> None:
        record.phase = Phase.RUNNING
        record.started_at = datetime.now(UTC)
        record.events.append(Event.now(reason, "memory backend: nothing actually runs"))
        record.log.append(f"{record.started_at.isoformat()} {reason}: memory backend, nothing runs")

    def _status(self, record: _Record) -> ServiceStatus:
        running = record.phase is Phase.RUNNING
        return ServiceStatus(
            phase=record.phase,
            started_at=record.started_at if running else None,
            ready_at=record.started_at if running else None,
            resources=Resources.from_values(record.spec.values).to_status(),
            urls=[self.service_url(record.spec.id)] if running and self.service_url else [],
        )

    async def install(self, spec: ServiceSpec) -> ServiceStatus:
        Resources.from_values(spec.values)  # same validation as the real backends
        record = self._records.setdefault(spec.id, _Record(spec=spec))
        self._run(record, "Started")
        return self._status(record)

    async def status(self, service_id: str) -> ServiceStatus:
        return self._status(self._get(service_id))

    async def logs(
        self, service_id: str, *, tail: int = 200, follow: bool = False
    ) -> AsyncIterator[str]:
        record = self._get(service_id)
        for line in record.log[-tail:] if tail > 0 else []:
            yield line

    async def events(self, service_id: str) -> list[Event]:
        return list(self._get(service_id).events)

    async def suspend(self, service_id: str) -> ServiceStatus:
        record = self._get(service_id)
        record.phase = Phase.SUSPENDED
        record.events.append(Event.now("Suspended", "suspended"))
        return self._status(record)

    async def resume(self, service_id: str, values: dict[str, Any] | None = None) -> ServiceStatus:
        record = self._get(service_id)
        if values is not None:
            record.spec = replace(record.spec, values=values)
        self._run(record, "Resumed")
        return self._status(record)

    async def uninstall(self, service_id: str) -> None:
        self._records.pop(service_id, None)

    async def internal_url(self, service_id: str) -> str | None:
        """Where the service would be in a cluster (nothing answers there)."""
        record = self._get(service_id)
        if record.phase is not Phase.RUNNING:
            return None
        return f"http://{service_id}.{record.spec.namespace or record.spec.project}"

    async def list(self) -> list[str]:
        return list(self._records)

    def get_state(self, service_id: str) -> dict[str, Any]:
        record = self._get(service_id)
        return {
            "phase": record.phase.value,
            "started_at": record.started_at.isoformat() if record.started_at else None,
            "events": [event.to_json() for event in record.events],
        }

    async def load_state(self, spec: ServiceSpec, state: dict[str, Any]) -> ServiceStatus:
        started = state.get("started_at")
        record = _Record(
            spec=spec,
            phase=Phase(state.get("phase", Phase.RUNNING.value)),
            started_at=datetime.fromisoformat(started) if started else None,
            events=[Event.from_json(event) for event in state.get("events", [])],
        )
        self._records[spec.id] = record
        return self._status(record)
