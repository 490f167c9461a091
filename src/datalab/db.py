"""Database models (SQLAlchemy 2.0) and schema migrations (Alembic).

SQLite in the data directory by default, PostgreSQL by URL. :func:`open_database` brings the
schema to the latest migration before anything else touches it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    false,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: the newest migration (a test checks it is Alembic's head): a database already there is
#: recognised without loading Alembic, which would stay resident (~14 MB) for nothing
SCHEMA_REVISION = "0010"
#: the largest row id (Integer columns are 32-bit on PostgreSQL): a larger id in a request can
#: name no row, and would overflow the database driver
MAX_ROW_ID = 2**31 - 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True, index=True)
    email: Mapped[str | None] = mapped_column(String(254))
    password_hash: Mapped[str | None] = mapped_column(String(255))  # None: external login only
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(16), default="local")  # local | oidc
    git_name: Mapped[str | None] = mapped_column(String(255))
    git_email: Mapped[str | None] = mapped_column(String(254))
    # personal access token injected as git.token into services (never shown back)
    git_token: Mapped[str | None] = mapped_column(String(1024))
    lang: Mapped[str] = mapped_column(String(8), default="en")
    # the web UI's colours: light | dark | system (follows the browser); services get
    # user.darkMode (dark, or system while the browser last reported a dark scheme)
    theme: Mapped[str] = mapped_column(String(8), default="system", server_default="system")
    system_dark: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", cascade="all")


class ApiToken(Base):
    """Personal API token. Only a SHA-256 digest is stored: tokens are 256-bit random strings,
    so a slow hash would add nothing but latency to every request."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    digest: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to recognise a token
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship(back_populates="tokens")


class WebSession(Base):
    """A signed-in web session. The session cookie is signed but kept by the browser: it names
    its row here by a random id (stored as a digest), and signing out deletes the row, so a
    copied cookie stops working then (see datalab.identity.sessions)."""

    __tablename__ = "web_sessions"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ProviderToken(Base):
    """The identity provider's tokens from a user's last sign-in, kept only when S3 or Vault
    take them (``web_identity: oidc``): launches and credential refreshes made later, from the
    CLI or by a running service, need a valid ID token. Secrets, like ``git_token``: never
    shown, never logged; the data directory is the trust boundary."""

    __tablename__ = "provider_tokens"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    id_token: Mapped[str] = mapped_column(Text)
    id_token_expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    refresh_token: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class VaultTokenRecord(Base):
    """A Vault token the platform minted for a user, by its accessor (never the token itself):
    disabling the user revokes every one (``auth/token/revoke-accessor``). Kept until the
    token cannot live any longer (``expires_at``: its maximum lifetime, renewals included)."""

    __tablename__ = "vault_tokens"

    accessor: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Project(Base):
    """A space owning services (and later buckets and secrets): personal or shared."""

    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)  # user-alice, project-sandbox
    name: Mapped[str] = mapped_column(String(255))
    personal_of: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    source: Mapped[str] = mapped_column(String(16), default="local")  # local | oidc-group
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Onyxia's servicePassword: the project's services derive their passwords from it
    # (project.password); generated at the project's first launch (accounts.project_password)
    service_password: Mapped[str | None] = mapped_column(String(64), default=None)

    members: Mapped[list[Membership]] = relationship(
        back_populates="project", cascade="all, delete-orphan"
    )


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("project_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16), default="member")  # member | admin

    project: Mapped[Project] = relationship(back_populates="members")
    user: Mapped[User] = relationship()


class Service(Base):
    __tablename__ = "services"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    friendly_name: Mapped[str] = mapped_column(String(255))
    catalog_id: Mapped[str] = mapped_column(String(63))
    chart_name: Mapped[str] = mapped_column(String(63))
    chart_version: Mapped[str] = mapped_column(String(63))
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    values: Mapped[dict[str, Any]] = mapped_column(JSON)
    overrides: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    phase: Mapped[str] = mapped_column(String(16), default="building")
    reason: Mapped[str | None] = mapped_column(Text)
    cpu: Mapped[float] = mapped_column(default=0.0)  # limits counted against quotas
    memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    backend_state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    owner: Mapped[User] = relationship()
    project: Mapped[Project] = relationship()


class SavedConfig(Base):
    """A user's named launch overrides for a chart, in a project (api/saved_configs.py)."""

    __tablename__ = "saved_configs"
    __table_args__ = (UniqueConstraint("owner_id", "project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    catalog_id: Mapped[str] = mapped_column(String(63))
    chart_name: Mapped[str] = mapped_column(String(63))
    chart_version: Mapped[str | None] = mapped_column(String(63))
    values: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class AuditEntry(Base):
    """One state-changing action (append-only: see datalab.audit). Names, not foreign keys:
    the record outlives the user, project or service it names."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    user_name: Mapped[str | None] = mapped_column(String(63), index=True)
    project_id: Mapped[str | None] = mapped_column(String(63), index=True)
    action: Mapped[str] = mapped_column(String(100), index=True)
    target: Mapped[str] = mapped_column(String(1024), default="")
    outcome: Mapped[str] = mapped_column(String(16))  # success | denied | failed
    status: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(2048))
    client_ip: Mapped[str | None] = mapped_column(String(45))


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    return engine


def schema_revision(engine: Engine) -> str | None:
    """The database's Alembic revision; None for a new database."""
    with engine.connect() as connection:  # a database that cannot be reached: its error
        try:
            revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:  # no such table yet
            return None
    return str(revision) if revision is not None else None


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest Alembic revision (a database already there does not even
    load Alembic). New databases run the migrations too: they create more than the models
    (the audit log's append-only triggers)."""
    if schema_revision(engine) == SCHEMA_REVISION:
        return
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per plugin otherwise
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        migrate(self.engine)

    def restrict_permissions(self) -> None:
        """Make a SQLite database and its -wal and -shm files (which hold recent writes:
        tokens, service values) readable by the platform's user only. New files get 0600 from
        the platform's umask; this fixes those made before it was set."""
        database = self.engine.url.database
        if self.engine.dialect.name == "sqlite" and database and database != ":memory:":
            for path in (database, f"{database}-wal", f"{database}-shm", f"{database}-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(path, 0o600)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
