"""Authentication of the prediction API: API keys and HTTP Basic users.

- **API keys** are random (256 bits) and stored as SHA-256 hashes (a slow hash buys nothing for
  random secrets) in a JSON file managed by ``python -m autocode.serve keys add|list|revoke``.
  Several keys, each with an id and a name (the application using it); a revoked key stays in
  the file, marked. Sent as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.
- **HTTP Basic** users are stored with argon2id hashes in a JSON file managed by
  ``python -m autocode.serve users add|list|remove``. Argon2 is slow on purpose (tens of ms), so a
  successful verification is remembered in memory for ``auth_cache_ttl_s`` (keyed by an HMAC of
  the credentials under a per-process random secret; never the password itself). Verifications
  run in a thread, at most two at a time, so that wrong passwords cannot stall the event loop.

Both files are re-read when they change (checked at most once a second), so a new or revoked
key takes effect without a restart. Files are written atomically (temporary file + rename) with
mode 0600, under an exclusive lock so that concurrent commands do not lose each other's changes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from autocode.errors import UserError

log = logging.getLogger(__name__)

KEY_PREFIX = "acapi_"
REALM = "autocode"
CHALLENGE = f'Basic realm="{REALM}", charset="UTF-8", Bearer realm="{REALM}"'


class AuthFileError(UserError):
    """A keys or users file that cannot be used; the message says what to fix."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


# -- the files ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_json(path: Path, kind: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise AuthFileError(f"{path}: not a readable {kind} file: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get(kind), list):
        raise AuthFileError(f'{path}: expected {{"{kind}": [...]}}')
    return data[kind]


def _write_json(path: Path, kind: str, entries: list[dict[str, Any]]) -> None:
    text = json.dumps({"version": 1, kind: entries}, indent=2, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _entry(cls: Any, entry: Any, path: Path) -> Any:
    """One entry of a keys or users file (unknown fields are ignored: files may be written by
    other tools, e.g. Helm values)."""
    if not isinstance(entry, dict):
        raise AuthFileError(f"{path}: every entry must be an object, got {entry!r}")
    known = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in entry.items() if k in known})
    except TypeError as exc:
        raise AuthFileError(f"{path}: invalid entry {entry.get('name', '')!r}: {exc}") from None


@dataclass
class ApiKey:
    id: str
    name: str
    hash: str
    created_at: str = ""
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class KeysFile:
    """The API keys file: ``{"version": 1, "keys": [{id, name, hash, created_at, revoked_at}]}``."""

    kind = "keys"

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def load(self) -> list[ApiKey]:
        return [_entry(ApiKey, entry, self.path) for entry in _read_json(self.path, self.kind)]

    def add(self, name: str) -> tuple[ApiKey, str]:
        """A new key for ``name``; returns the entry and the key (shown once, never stored)."""
        name = name.strip()
        if not name:
            raise AuthFileError("a key needs a name (the application that uses it)")
        with _locked(self.path):
            keys = self.load()
            if any(k.name == name and k.active for k in keys):
                raise AuthFileError(f"an active key is already named {name!r}: revoke it first")
            secret = KEY_PREFIX + secrets.token_urlsafe(32)
            entry = ApiKey(
                id=secrets.token_hex(4), name=name, hash=hash_key(secret), created_at=now_iso()
            )
            _write_json(self.path, self.kind, [asdict(k) for k in [*keys, entry]])
        return entry, secret

    def revoke(self, ident: str) -> ApiKey:
        """Revoke the active key whose id or name is ``ident``."""
        with _locked(self.path):
            keys = self.load()
            matches = [k for k in keys if k.active and ident in (k.id, k.name)]
            if not matches:
                known = ", ".join(f"{k.id} ({k.name})" for k in keys if k.active) or "none"
                raise AuthFileError(f"no active key with id or name {ident!r}; active: {known}")
            for key in matches:
                key.revoked_at = now_iso()
            _write_json(self.path, self.kind, [asdict(k) for k in keys])
        return matches[0]


@dataclass
class User:
    name: str
    hash: str
    created_at: str = ""
    disabled: bool = False


class UsersFile:
    """The Basic users file: ``{"version": 1, "users": [{name, hash, created_at, disabled}]}``."""

    kind = "users"

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def load(self) -> list[User]:
        return [_entry(User, entry, self.path) for entry in _read_json(self.path, self.kind)]

    def add(self, name: str, password: str | None = None, *, replace: bool = False) -> str:
        """Add ``name`` (or set its password with ``replace``); returns the password (generated
        when not given)."""
        from argon2 import PasswordHasher

        name = name.strip()
        if not name or ":" in name:
            raise AuthFileError("a user name must be non-empty and contain no ':'")
        password = password or secrets.token_urlsafe(18)
        if len(password) < 8:
            raise AuthFileError("passwords have at least 8 characters")
        hashed = PasswordHasher().hash(password)
        with _locked(self.path):
            users = self.load()
            existing = [u for u in users if u.name == name]
            if existing and not replace:
                raise AuthFileError(f"user {name!r} exists (use --replace to set its password)")
            users = [u for u in users if u.name != name]
            users.append(User(name, hashed, now_iso()))
            _write_json(self.path, self.kind, [asdict(u) for u in users])
        return password

    def remove(self, name: str) -> None:
        with _locked(self.path):
            users = self.load()
            if not any(u.name == name for u in users):
                raise AuthFileError(f"no user {name!r}")
            _write_json(self.path, self.kind, [asdict(u) for u in users if u.name != name])


# -- verification ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Principal:
    """Who made a request: ``key:<id>``, ``user:<name>`` or ``anonymous``."""

    kind: str  # api_key | basic | anonymous
    name: str
    id: str = ""

    def label(self) -> str:
        if self.kind == "api_key":
            return f"key:{self.id}"
        if self.kind == "basic":
            return f"user:{self.name}"
        return "anonymous"


class AuthError(Exception):
    """No valid credentials; ``str()`` is the message for the client."""


@dataclass
class _Watched:
    path: Path | None
    stamp: tuple[int, int, int] | None = None
    loaded: Any = field(default_factory=dict)


class Authenticator:
    """Checks the credentials of a request against the keys and users files."""

    def __init__(
        self,
        keys_file: Path | None = None,
        users_file: Path | None = None,
        *,
        env_user: tuple[str, str] | None = None,
        allow_anonymous: bool = False,
        cache_ttl_s: float = 300.0,
        reload_interval_s: float = 1.0,
    ):
        self._keys = _Watched(keys_file)
        self._users = _Watched(users_file)
        self._env_user = (
            (env_user[0], hashlib.sha256(env_user[1].encode()).digest()) if env_user else None
        )
        self.anonymous = allow_anonymous and not (keys_file or users_file or env_user)
        self.cache_ttl_s = cache_ttl_s
        self.reload_interval_s = reload_interval_s
        self._checked = 0.0
        self._secret = secrets.token_bytes(32)
        self._cache: dict[bytes, float] = {}
        self._lock = threading.Lock()
        self._argon_slots = threading.BoundedSemaphore(2)
        self._dummy_hash: str | None = None
        self.reload(force=True)

    @property
    def configured(self) -> bool:
        return bool(self._keys.path or self._users.path or self._env_user)

    # -- files --------------------------------------------------------------------------------
    def reload(self, force: bool = False) -> None:
        """Re-read the files that changed since the last look (at most once a second)."""
        now = time.monotonic()
        if not force and now - self._checked < self.reload_interval_s:
            return
        self._checked = now
        self._refresh(self._keys, KeysFile, lambda keys: {k.hash: k for k in keys})
        if self._refresh(self._users, UsersFile, lambda users: {u.name: u for u in users}):
            with self._lock:
                self._cache.clear()

    @staticmethod
    def _refresh(watched: _Watched, file_class: Any, index: Any) -> bool:
        if watched.path is None:
            return False
        try:
            st = os.stat(watched.path)
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp == watched.stamp and watched.stamp is not None:
            return False
        if stamp is None:
            changed = bool(watched.loaded) or watched.stamp is not None
            watched.loaded, watched.stamp = {}, None
            return changed
        try:
            watched.loaded = index(file_class(watched.path).load())
        except AuthFileError as exc:  # keep the last good state; say so loudly
            log.error("%s (keeping the previous credentials)", exc)
            return False
        watched.stamp = stamp
        return True

    def counts(self) -> dict[str, int]:
        return {
            "api_keys": sum(1 for k in self._keys.loaded.values() if k.active),
            "users": sum(1 for u in self._users.loaded.values() if not u.disabled)
            + (1 if self._env_user else 0),
        }

    # -- requests -----------------------------------------------------------------------------
    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The principal of a request, or `AuthError` (→ 401)."""
        if self.anonymous:
            return Principal("anonymous", "anonymous")
        self.reload()
        key = headers.get("x-api-key")
        authorization = headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if key is None and scheme == "bearer" and credentials:
            key = credentials
        if key is not None:
            return self._check_key(key.strip())
        if scheme == "basic" and credentials:
            name, password = _decode_basic(credentials)
            return await self._check_basic(name, password)
        raise AuthError(
            "authentication required: send an API key (X-API-Key header or Authorization: "
            "Bearer) or HTTP Basic credentials"
        )

    def _check_key(self, key: str) -> Principal:
        entry = self._keys.loaded.get(hash_key(key)) if key else None
        if entry is None or not entry.active:
            raise AuthError("invalid or revoked API key")
        return Principal("api_key", entry.name, entry.id)

    async def _check_basic(self, name: str, password: str) -> Principal:
        if self._env_user is not None and name == self._env_user[0]:
            digest = hashlib.sha256(password.encode()).digest()
            if hmac.compare_digest(digest, self._env_user[1]):
                return Principal("basic", name)
            raise AuthError("invalid username or password")
        token = hmac.new(self._secret, f"{name}\0{password}".encode(), "sha256").digest()
        now = time.monotonic()
        with self._lock:
            expires = self._cache.get(token)
        user = self._users.loaded.get(name)
        if expires is not None and expires > now and user is not None and not user.disabled:
            return Principal("basic", name)
        import anyio.to_thread

        ok = await anyio.to_thread.run_sync(self._verify, user, password)
        if not ok:
            raise AuthError("invalid username or password")
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = now + self.cache_ttl_s
        return Principal("basic", name)

    def _verify(self, user: User | None, password: str) -> bool:
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError

        hasher = PasswordHasher()
        with self._argon_slots:
            if user is None or user.disabled:
                # same work as for a real user: response times do not reveal user names
                if self._dummy_hash is None:
                    self._dummy_hash = hasher.hash(secrets.token_urlsafe(16))
                with contextlib.suppress(VerificationError, InvalidHashError):
                    hasher.verify(self._dummy_hash, password)
                return False
            try:
                return hasher.verify(user.hash, password)
            except (VerificationError, InvalidHashError):
                return False


def _decode_basic(credentials: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError("malformed Basic credentials (expected base64 of user:password)") from None
    name, sep, password = decoded.partition(":")
    if not sep:
        raise AuthError("malformed Basic credentials (expected base64 of user:password)")
    return name, password
