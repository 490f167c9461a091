"""Service origins: every service is reached at an origin of its own, ``<id>.<region.domain>``
with the platform's scheme and port (``http://jupyter-a1b2.localhost:8000/`` on one machine:
browsers resolve every ``*.localhost`` name to loopback; a wildcard DNS name in production),
as Onyxia gives each service its own ingress host.

Why: the pages a service serves are untrusted (a service is its user's program, and a shared
service is someone else's). On the platform's origin, their JavaScript could call the API with
the visitor's session. On an origin of their own they are cross-origin to the platform: the
platform's session cookie is host-only on the platform's host and never sent to them, and the
browser keeps the platform's pages and answers from them.

Who may reach a service is decided at every request by the API's rule
(:func:`~datalab.identity.access.check_service`, action ``use``). Callers prove who they are
with:

- the service host's **access cookie** (``datalab_service``: host-only, HttpOnly,
  SameSite=Lax; refused on requests other sites' pages make, by Fetch Metadata, as services
  of one domain are same-site to each other), which a browser gets through a redirect
  handshake, as with JupyterHub's
  single-user OAuth: a visitor without it is sent to the platform
  (``/api/services/<id>/open``), which checks their session and access and sends them back to
  ``/_datalab/authorize`` with a one-time code. The cookie names the web session it came from,
  so signing out closes every service too;
- or a **bearer token**: a platform API token, or a service's own token (the project's other
  services: a notebook logging to the project's MLflow).

Neither reaches the service. The platform's own origin keeps ``/s/<id>/...``: browsers are
redirected to the service's origin, and bearer callers (programs, which cannot resolve
``*.localhost`` names) are proxied. A browser cannot send a bearer token with a navigation, so
no service page is ever rendered on the platform's origin; those answers carry
``Content-Security-Policy: sandbox`` all the same.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.orm import Session
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from datalab.backends.base import Endpoint
from datalab.config import SERVICES_PATH
from datalab.db import Service, User
from datalab.errors import (
    DatalabError,
    Forbidden,
    InvalidToken,
    NotFound,
    ServiceNotFound,
    TooManyRequests,
    Unauthenticated,
)
from datalab.identity import accounts, sessions
from datalab.identity.access import (
    Action,
    check_service,
    principal_for,
    service_credential_stands,
)
from datalab.identity.issuer import AUDIENCE_SERVICE
from datalab.identity.tokens import looks_like_token
from datalab.proxy import Route, ServiceProxy, deny, respond

if TYPE_CHECKING:
    from datalab.platform import Platform

ACCESS_COOKIE = "datalab_service"
HANDSHAKE_PATH = "/_datalab/authorize"
INTERNAL_PREFIX = SERVICES_PATH
CODE_TTL_S = 60.0
MAX_PENDING_CODES = 10_000
SERVICE_ID = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
#: answers proxied on the platform's origin: never a page with the platform's privileges
SANDBOX = ((b"content-security-policy", b"sandbox"), (b"x-content-type-options", b"nosniff"))


@dataclass(frozen=True)
class _Code:
    expires: float
    service_id: str
    access: dict[str, object]


class ServiceGateway:
    """Routes service hosts to the proxy, runs the access handshake, and serves ``/s/``."""

    def __init__(self, platform: Platform, *, session_cookie: str) -> None:
        self.platform = platform
        settings = platform.settings
        self.platform_url = settings.server.url()
        self.platform_host = (urlsplit(self.platform_url).hostname or "").lower()
        self.domain = settings.region.domain.lower().strip(".")
        self.secure = settings.secure_cookies
        self.max_age_s = settings.security.session_max_age_s
        self.proxy = ServiceProxy(drop_cookies=[ACCESS_COOKIE, session_cookie])
        self._signer = URLSafeSerializer(platform.session_secret, salt="datalab-service-access")
        self._codes: dict[str, _Code] = {}

    # -- hosts --------------------------------------------------------------------------------

    def service_of_host(self, host: str) -> str | None:
        """The service a Host header names, or None for the platform's own host."""
        name = urlsplit(f"//{host}").hostname or ""
        suffix = "." + self.domain
        if name == self.platform_host or not name.endswith(suffix):
            return None
        label = name[: -len(suffix)]
        return label if SERVICE_ID.fullmatch(label) else None

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """The outermost ASGI app: service hosts and ``/s/`` here, the rest to ``app``."""

        async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] in ("http", "websocket"):
                service_id = self.service_of_host(Headers(scope=scope).get("host", ""))
                if service_id is not None:
                    await self._serve_service_host(service_id, scope, receive, send)
                    return
                path: str = scope["path"]
                if path == INTERNAL_PREFIX or path.startswith(INTERNAL_PREFIX + "/"):
                    await self._serve_internal(scope, receive, send)
                    return
            await app(scope, receive, send)

        return dispatch

    # -- the handshake ------------------------------------------------------------------------

    def open_url(self, web_session: Mapping[str, Any], service_id: str, next_path: str) -> str:
        """Where a browser signed in with ``web_session`` (the platform's session cookie) is
        sent to open a service: its host's handshake, with a one-time code (60 s) for an access
        cookie tied to that session. Raises when not signed in (:class:`Unauthenticated`) or not
        allowed to use the service (as the API would)."""
        with self.platform.db.session() as session:
            user = sessions.signed_in_user(session, web_session, self.max_age_s)
            if user is None:
                raise Unauthenticated("sign in to open the service")
            self._check_use(session, user, service_id, project=None)
        now = time.monotonic()
        for code in [c for c, entry in self._codes.items() if entry.expires < now]:
            del self._codes[code]
        if len(self._codes) >= MAX_PENDING_CODES:
            raise TooManyRequests("too many services being opened at once", retry_after=CODE_TTL_S)
        code = secrets.token_urlsafe(32)
        access = {key: web_session[key] for key in ("uid", "sid", "pwv")} | {"svc": service_id}
        self._codes[code] = _Code(now + CODE_TTL_S, service_id, access)
        query = urlencode({"code": code, "next": safe_next(next_path)})
        return f"{self.origin(service_id)}{HANDSHAKE_PATH}?{query}"

    def origin(self, service_id: str) -> str:
        """``scheme://<id>.<domain>[:port]`` (no trailing slash)."""
        return self.platform.settings.service_url(service_id).rstrip("/")

    async def _complete_handshake(
        self, service_id: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        entry = self._codes.pop((query.get("code") or [""])[0], None)
        if entry is None or entry.expires < time.monotonic() or entry.service_id != service_id:
            await respond(send, 400, "this link has expired: open the service from the platform")
            return
        cookie = f"{ACCESS_COOKIE}={self._signer.dumps(entry.access)}; Path=/; HttpOnly; "
        cookie += f"SameSite=Lax; Max-Age={self.max_age_s}" + ("; Secure" if self.secure else "")
        location = safe_next((query.get("next") or ["/"])[0])
        headers = [
            (b"location", location.encode("latin-1")),
            (b"set-cookie", cookie.encode()),
            (b"cache-control", b"no-store"),
        ]
        await respond(send, 302, "", headers)

    # -- serving ------------------------------------------------------------------------------

    async def _serve_service_host(
        self, service_id: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if scope["type"] == "http" and scope["path"] == HANDSHAKE_PATH:
            await self._complete_handshake(service_id, scope, receive, send)
            return
        try:
            endpoint = await self._authorize(service_id, scope, allow_cookie=True)
        except Unauthenticated as exc:
            if _is_navigation(scope):
                target = scope["path"] + _query(scope)
                location = f"{self.platform_url}/api/services/{service_id}/open?" + urlencode(
                    {"next": target}
                )
                await respond(send, 302, "", [(b"location", location.encode("latin-1"))])
            else:
                await deny(scope, receive, send, 401, exc.message)
            return
        except DatalabError as exc:
            await deny(scope, receive, send, exc.status, exc.message)
            return
        await self._forward(scope, receive, send, endpoint)

    async def _serve_internal(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/s/<id>/...`` on the platform's origin: proxied for bearer callers, a redirect to
        the service's origin for everyone else."""
        rest = scope["path"][len(INTERNAL_PREFIX) :]  # "/<id>/..."
        service_id = rest.split("/")[1] if rest.count("/") >= 1 else ""
        if not SERVICE_ID.fullmatch(service_id):
            await deny(scope, receive, send, 404, "no such service")
            return
        prefix = f"{INTERNAL_PREFIX}/{service_id}"
        if _platform_bearer(scope) is None:
            if scope["type"] != "http":
                await deny(scope, receive, send, 401, "send a platform token")
                return
            location = self.origin(service_id) + (rest[len(service_id) + 1 :] or "/")
            location += _query(scope)
            await respond(send, 307, "", [(b"location", location.encode("latin-1"))])
            return
        try:
            endpoint = await self._authorize(service_id, scope, allow_cookie=False)
        except DatalabError as exc:
            await deny(scope, receive, send, exc.status, exc.message)
            return
        await self._forward(scope, receive, send, endpoint, prefix=prefix, headers=SANDBOX)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        endpoint: Endpoint | None,
        *,
        prefix: str = "",
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        """Proxy to the service's endpoint (None: it is not running) under ``prefix``."""
        if endpoint is None:
            await deny(scope, receive, send, 503, "the service is not running")
            return
        route = Route(endpoint, prefix=prefix, response_headers=headers)
        await self.proxy.forward(scope, receive, send, route)

    # -- who is calling -----------------------------------------------------------------------

    async def _authorize(
        self, service_id: str, scope: Scope, *, allow_cookie: bool
    ) -> Endpoint | None:
        """The endpoint of the service if the caller may use it (raises otherwise); the
        caller's platform credentials are removed from the request."""
        with self.platform.db.session() as session:
            user, project = self._bearer_caller(session, scope)
            if user is None and allow_cookie:
                user = self._cookie_caller(session, scope, service_id)
            if user is None:
                raise Unauthenticated(
                    "sign in: open the service from the platform, or send a platform token "
                    "('Authorization: Bearer ...')"
                )
            self._check_use(session, user, service_id, project)
        try:
            return await self.platform.backend.endpoint(service_id)
        except ServiceNotFound:
            return None

    def _check_use(
        self, session: Session, user: User, service_id: str, project: str | None
    ) -> None:
        """The API's rule (action ``use``) in the service's own project; ``project``: the only
        project the caller's credential reaches (a service token's), None for any."""
        row = session.get(Service, service_id)
        if row is None or (project is not None and row.project_id != project):
            raise NotFound("no such service")
        try:
            principal = principal_for(session, user, row.project_id, "proxy")
        except Forbidden:  # not a member: the service does not exist for them
            raise NotFound("no such service") from None
        check_service(principal, row, Action.USE)

    def _bearer_caller(self, session: Session, scope: Scope) -> tuple[User | None, str | None]:
        """The user of a platform bearer token, and the project it is confined to (a
        service's token reaches its own project's services only)."""
        token = _platform_bearer(scope)
        if token is None:
            return None, None
        # the service must never see the caller's platform credentials
        scope["headers"] = [(n, v) for n, v in scope["headers"] if n != b"authorization"]
        if looks_like_token(token):
            return accounts.user_for_token(session, token), None
        issuer = self.platform.issuer
        assert issuer is not None
        try:
            claims = issuer.verify(token, AUDIENCE_SERVICE)
        except InvalidToken as exc:
            raise Unauthenticated(f"service token refused: {exc}") from None
        user = session.query(User).filter(User.name == str(claims["sub"])).one_or_none()
        caller = session.get(Service, str(claims.get("service", "")))
        project = str(claims.get("project", ""))
        if user is None or user.disabled:
            raise Unauthenticated("service token refused: the account is disabled")
        if not service_credential_stands(user, caller, project):
            raise Unauthenticated("service token refused: its service no longer exists")
        return user, project

    def _cookie_caller(self, session: Session, scope: Scope, service_id: str) -> User | None:
        raw = _cookie(scope, ACCESS_COOKIE)
        if raw is None:
            return None
        if _from_another_site(scope):
            # another site's page (another service's, under the same domain) using the
            # visitor's cookie: refused, unless the visitor navigates here (a link)
            raise Forbidden("this service refuses requests made by another site's pages")
        try:
            access = self._signer.loads(raw)
        except BadSignature:
            return None
        if not isinstance(access, dict) or access.get("svc") != service_id:
            return None
        return sessions.signed_in_user(session, access, self.max_age_s)

    async def aclose(self) -> None:
        await self.proxy.aclose()


def safe_next(path: str) -> str:
    """A path on the same host (never another site: an open redirect), else "/"."""
    if path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/"


def _platform_bearer(scope: Scope) -> str | None:
    """The platform credential in ``Authorization: Bearer``: an API token or a JWT. Other
    schemes (Basic, Jupyter's ``token``) and other bearers belong to the service."""
    authorization = Headers(scope=scope).get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return None
    if looks_like_token(credentials) or credentials.count(".") == 2:
        return credentials
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    for header in Headers(scope=scope).getlist("cookie"):
        for part in header.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
    return None


def _query(scope: Scope) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    return f"?{query}" if query else ""


def _from_another_site(scope: Scope) -> bool:
    """A request a page of another origin made with the visitor's cookies (Fetch Metadata:
    ``Sec-Fetch-Site`` cross-site or same-site), other than a top-level navigation. Services of
    one domain are same-site to each other, so SameSite cookies alone would not keep one
    service's page from posting to another in the visitor's name (CSRF) or opening its
    WebSockets. Browsers without Fetch Metadata send no such header: their requests pass."""
    headers = Headers(scope=scope)
    if headers.get("sec-fetch-site") not in ("cross-site", "same-site"):
        return False
    return not (_is_navigation(scope) and headers.get("sec-fetch-dest") == "document")


def _is_navigation(scope: Scope) -> bool:
    """A browser loading a page (sent to sign in), not a script or a program (401)."""
    if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
        return False
    headers = Headers(scope=scope)
    mode = headers.get("sec-fetch-mode")
    if mode is not None:
        return mode == "navigate"
    return "text/html" in headers.get("accept", "")
