"""What the local backend knows about one service, and its JSON state.

The state (``get_state``) is what the platform persists and hands back to ``load_state`` after
a restart; the backend also writes it next to the service at every transition
(``state.json``), so that a state written during shutdown survives even if the platform did not
persist it.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from datalab.backends.base import Event, Phase, ServiceSpec
from datalab.backends.local.accounts import Account
from datalab.backends.local.process import ProcessRef
from datalab.backends.local.recipe import RenderedRecipe
from datalab.envs import EnvSpec
from datalab.resources import Resources

STATE_VERSION = 1
STATE_FILE = "state.json"
MAX_EVENTS = 200


@dataclass
class ServiceRecord:
    spec: ServiceSpec
    recipe: dict[str, Any]  # the chart's local.yaml, shape-validated, unrendered
    resources: Resources
    env_spec: EnvSpec
    workdir: Path  # <services>/<id>/work; its parent holds the log and state files
    log_file: Path
    account: Account | None  # None: the platform's own account (single-user mode)
    phase: Phase = Phase.BUILDING
    reason: str | None = None
    events: list[Event] = field(default_factory=list)
    port: int | None = None
    process: ProcessRef | None = None
    env_key: str | None = None
    rendered: RenderedRecipe | None = None
    started_at: datetime | None = None
    ready_at: datetime | None = None
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    pipeline: asyncio.Task[None] | None = None  # build -> start -> readiness
    watcher: asyncio.Task[None] | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    returncode: int | None = None
    stopping: bool = False  # the platform is stopping it: its end is not a failure
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def add_event(self, event: Event) -> None:
        self.events.append(event)
        del self.events[:-MAX_EVENTS]
        self.updated_at = datetime.now(UTC)

    def to_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "phase": self.phase.value,
            "reason": self.reason,
            "pid": self.process.pid if self.process else None,
            "create_time": self.process.create_time if self.process else None,
            "port": self.port,
            "env_key": self.env_key,
            "account": self.account.name if self.account else None,
            "started_at": _iso(self.started_at),
            "ready_at": _iso(self.ready_at),
            "updated_at": self.updated_at.isoformat(),
            "events": [event.to_json() for event in self.events],
        }

    def apply_state(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`to_state` saved (the account is derived from the owner)."""
        self.phase = Phase(state.get("phase", Phase.FAILED.value))
        self.reason = state.get("reason")
        self.events = [Event.from_json(event) for event in state.get("events", [])]
        self.port = state.get("port")
        self.env_key = state.get("env_key")
        self.started_at = _time(state.get("started_at"))
        self.ready_at = _time(state.get("ready_at"))
        if state.get("pid") and state.get("create_time"):
            self.process = ProcessRef(int(state["pid"]), float(state["create_time"]))

    def persist(self) -> None:
        path = self.workdir.parent / STATE_FILE
        if not path.parent.is_dir():  # uninstalled
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_state()))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)


def read_state_file(service_dir: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((service_dir / STATE_FILE).read_text())
        return state
    except (OSError, json.JSONDecodeError):
        return None


def newer_state(platform: dict[str, Any], own: dict[str, Any] | None) -> dict[str, Any]:
    """The more recent of the platform's copy and the backend's own."""
    if own and own.get("updated_at", "") > platform.get("updated_at", ""):
        return own
    return platform


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
