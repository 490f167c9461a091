"""The platform object: settings, database, catalogs, backend and services, started and stopped
together. The API, the CLI's ``up`` command and the tests all build one with
:func:`Platform.create`."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from datalab.allocator import release_free_heap
from datalab.backends import backend_class
from datalab.backends.base import Backend
from datalab.catalog import CatalogRegistry
from datalab.config import Settings
from datalab.db import Database
from datalab.files import PLATFORM_UMASK, private_dir, read_or_create_secret
from datalab.identity import accounts
from datalab.identity.federation import ProviderTokens
from datalab.identity.issuer import JwksServer, TokenIssuer
from datalab.identity.oidc import CALLBACK_PATH, OidcClient
from datalab.identity.ratelimit import LoginThrottle
from datalab.injection import CredentialBroker
from datalab.secrets.service import SecretsService
from datalab.services import ServiceManager
from datalab.storage.service import StorageService

log = logging.getLogger(__name__)


def make_backend(settings: Settings) -> Backend:
    """The execution backend named by ``backend.name`` (:mod:`datalab.backends`)."""
    return backend_class(settings.backend.name).from_settings(settings)


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
    issuer: TokenIssuer | None = None
    jwks_server: JwksServer | None = None
    storage: StorageService | None = None
    secret_store: SecretsService | None = None
    oidc_client: OidcClient | None = None
    federation: ProviderTokens | None = None

    @classmethod
    def create(cls, settings: Settings, backend: Backend | None = None) -> Platform:
        os.umask(PLATFORM_UMASK)  # everything the platform creates is its own (datalab.files)
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        # others may traverse (services running under per-user accounts reach their work dirs
        # below it) but not list it; what is inside is private unless made otherwise
        os.chmod(data_dir, 0o711)  # noqa: S103
        for private in ("keys", "logs", "catalog-cache"):
            private_dir(data_dir / private)
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
        issuer = TokenIssuer(data_dir / "keys" / "issuer.pem", settings.server.url())
        oidc = settings.oidc
        oidc_client = (
            OidcClient(oidc, settings.server.url() + CALLBACK_PATH)
            if oidc.enabled and oidc.issuer_url and oidc.client_id
            else None
        )
        federation = ProviderTokens(db, oidc_client) if oidc_client and settings.federated else None
        storage = (
            StorageService(settings, issuer, federation=federation)
            if settings.storage.mode != "disabled"
            else None
        )
        secret_store = (
            SecretsService(settings, issuer, db, federation=federation)
            if settings.secrets.mode != "disabled"
            else None
        )
        services = ServiceManager(settings, db, catalogs, backend)
        services.credentials = CredentialBroker(
            settings, db, issuer, storage, secret_store, reachable_url=backend.reachable_url
        )
        return cls(
            issuer=issuer,
            oidc_client=oidc_client,
            federation=federation,
            storage=storage,
            secret_store=secret_store,
            settings=settings,
            db=db,
            catalogs=catalogs,
            backend=backend,
            services=services,
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
        await self._start_embedded_servers()
        try:
            if self.services.credentials is not None:  # a backend that cannot give one fails now
                for endpoint, url in self.services.credentials.service_addresses().items():
                    log.info("services reach %s at %s", endpoint, url)
        except BaseException:
            await self._stop_embedded_servers()
            raise
        await self.catalogs.refresh()
        self.catalogs.start()
        await self.backend.start()
        await self.services.start()
        if self.storage is not None:
            self.storage.admin_client()  # the S3 client's models load now, not in a request
        release_free_heap()

    async def stop(self) -> None:
        await self.services.stop()
        await self.backend.shutdown()
        await self.catalogs.stop()
        await self._stop_embedded_servers()
        self.db.dispose()

    async def _start_embedded_servers(self) -> None:
        """Object storage and secrets (embedded: started and supervised here; external: only
        configured). The embedded ones fetch the issuer's keys from a loopback listener."""
        if self.storage is not None and self.storage.embedded is not None:
            assert self.issuer is not None
            self.jwks_server = JwksServer(self.issuer)
            self.jwks_server.start()
            self.storage.jwks = self.jwks_server
        try:
            if self.storage is not None:
                await self.storage.start()
                mode = self.settings.storage.mode
                log.info("object storage (S3, %s): %s", mode, self.storage.endpoint_url)
            if self.secret_store is not None:
                await self.secret_store.start()
                mode = self.settings.secrets.mode
                log.info("secrets (Vault API, %s): %s", mode, self.secret_store.address)
        except BaseException:
            await self._stop_embedded_servers()
            raise

    async def _stop_embedded_servers(self) -> None:
        if self.secret_store is not None:
            await self.secret_store.stop()
        if self.storage is not None:
            await self.storage.stop()
        if self.jwks_server is not None:
            self.jwks_server.stop()
            self.jwks_server = None
