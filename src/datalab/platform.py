"""The platform object: settings, database, catalogs, backend and services, started and stopped
together. The API, the CLI's ``up`` command and the tests all build one with
:func:`Platform.create`."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from datalab.backends.base import Backend
from datalab.catalog import CatalogRegistry
from datalab.config import Settings
from datalab.db import Database
from datalab.identity import accounts
from datalab.identity.ratelimit import LoginThrottle
from datalab.services import ServiceManager

log = logging.getLogger(__name__)


def make_backend(settings: Settings) -> Backend:
    """The execution backend named by ``backend.name``."""
    name = settings.backend.name
    if name == "memory":
        from datalab.backends.memory import MemoryBackend

        return MemoryBackend()
    if name == "local":
        from datalab.backends.local import LocalBackend

        return LocalBackend(
            data_dir=settings.data_dir,
            public_url=settings.server.url(),
            stop_services_on_shutdown=settings.backend.stop_services_on_shutdown,
            env_build_timeout_s=settings.backend.env_build_timeout_s,
            readiness_timeout_s=settings.backend.readiness_timeout_s,
        )
    raise NotImplementedError(
        f"backend {name!r} is not available in this version; use 'local' or 'memory'"
    )


def read_or_create_secret(path: Path, nbytes: int = 32) -> str:
    """A secret kept in the data directory, readable by the platform's user only."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


@dataclass
class Platform:
    settings: Settings
    db: Database
    catalogs: CatalogRegistry
    backend: Backend
    services: ServiceManager
    login_throttle: LoginThrottle
    session_secret: str
    first_admin_password: str | None = None

    @classmethod
    def create(cls, settings: Settings, backend: Backend | None = None) -> Platform:
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        # others may traverse (services running under per-user accounts reach their work dirs
        # below it) but not list it; what is private inside is protected file by file
        os.chmod(data_dir, 0o711)  # noqa: S103
        db = Database(settings.db_url)
        db.migrate()
        db.restrict_permissions()
        catalogs = CatalogRegistry(
            settings.catalogs,
            cache_dir=data_dir / "catalog-cache",
            schema_dirs=list(settings.schema_dirs),
        )
        backend = backend or make_backend(settings)
        secret = (
            settings.security.session_secret.get_secret_value()
            if settings.security.session_secret
            else read_or_create_secret(data_dir / "keys" / "session.key")
        )
        return cls(
            settings=settings,
            db=db,
            catalogs=catalogs,
            backend=backend,
            services=ServiceManager(settings, db, catalogs, backend),
            login_throttle=LoginThrottle(
                settings.security.login_max_failures, settings.security.login_lockout_s
            ),
            session_secret=secret,
        )

    def ensure_admin(self) -> str | None:
        """Create the first admin if there is none; the password comes from
        ``DATALAB_ADMIN_PASSWORD`` or is generated. Returned once, to be printed, never logged."""
        with self.db.session() as session:
            password = accounts.ensure_admin(
                session, self.settings.region, os.environ.get("DATALAB_ADMIN_PASSWORD") or None
            )
        self.first_admin_password = password
        return password

    async def start(self) -> None:
        await self.catalogs.refresh()
        self.catalogs.start()
        await self.backend.start()
        await self.services.start()

    async def stop(self) -> None:
        await self.services.stop()
        await self.backend.shutdown()
        await self.catalogs.stop()
        self.db.dispose()
