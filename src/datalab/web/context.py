"""What every page needs: the signed-in user, the project they act in, the language, the CSRF
token, the branding, and a template renderer (autoescaped)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from datalab.config import BrandingSettings
from datalab.db import User
from datalab.errors import DatalabError, Forbidden, NotFound, Unauthenticated
from datalab.http.deps import authenticated_user
from datalab.http.localize import localize
from datalab.http.views import projects_of
from datalab.identity.access import Principal, principal_for, require_admin
from datalab.platform import Platform
from datalab.web.i18n import DEFAULT_LANGUAGE, LANGUAGES, negotiate, translate

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

templates = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

TINTS = 8  # placeholder colours: .tint-0 ... .tint-7 in style.css


def chart_initials(name: str) -> str:
    """A chart's placeholder icon: the initials of its name's first two words
    (``jupyter-python`` -> ``JP``, ``mlflow`` -> ``M``)."""
    words = [w for w in re.split(r"[-_.\s]+", name) if w]
    return "".join(w[0] for w in words[:2]).upper() or "?"


def chart_tint(name: str) -> int:
    """A stable colour for a chart's placeholder (the same name, the same colour)."""
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % TINTS


templates.globals.update(chart_initials=chart_initials, chart_tint=chart_tint)


class LoginRequired(Exception):
    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


async def redirect_to_login(request: Request, exc: LoginRequired) -> Response:
    target = f"/login?next={quote(exc.next_url, safe='/')}"
    if request.headers.get("hx-request"):
        # a polled fragment after the session ended: htmx sends the whole page to sign-in
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


@dataclass
class Page:
    """The request's viewer. ``user``/``principal`` are None on public pages (login)."""

    request: Request
    platform: Platform
    lang: str
    csrf: str
    user: User | None = None
    principal: Principal | None = None
    projects: list[Any] = field(default_factory=list)

    @property
    def branding(self) -> BrandingSettings:
        return self.platform.settings.branding

    @property
    def site_name(self) -> str:
        return self.branding.name or self.platform.settings.instance_name

    def t(self, key: str, /, **params: Any) -> str:
        return translate(self.lang, key, **params)

    def require(self) -> Principal:
        if self.principal is None:
            raise LoginRequired(str(self.request.url.path))
        return self.principal

    def require_admin(self) -> Principal:
        """The viewer, if a platform administrator (:func:`~datalab.identity.access.require_admin`:
        :class:`~datalab.errors.Forbidden` otherwise)."""
        principal = self.require()
        require_admin(principal)
        return principal

    def size(self, count: int | None) -> str:
        """A byte count with binary units in the page's language (8 B, 1.5 KiB / 1,5 Kio)."""
        if count is None:
            return ""
        units = self.t("size.units").split()
        value, unit = float(count), 0
        while value >= 1024 and unit < len(units) - 1:
            value, unit = value / 1024, unit + 1
        text = f"{value:.0f}" if unit == 0 else f"{value:.1f}"
        return f"{text.replace('.', self.t('size.decimal'))} {units[unit]}"

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = templates.get_template(template).render(
            page=self, t=self.t, languages=LANGUAGES, now=datetime.now(UTC), **context
        )
        return HTMLResponse(html, status_code=status)

    def message(self, exc: DatalabError) -> str:
        """The platform's message (already free of secrets) in the page's language."""
        return localize(exc.message, self.lang)

    def error(self, exc: DatalabError) -> HTMLResponse:
        """An error page with the platform's message."""
        return self.render("error.html", status=exc.status, message=self.message(exc))

    def check_form_csrf(self, sent: str | None) -> None:
        if not self.csrf or not hmac.compare_digest(sent or "", self.csrf):
            raise Forbidden("the form has expired or did not come from this site; reload the page")


def ensure_csrf(request: Request) -> str:
    """The session's CSRF token; anonymous visitors get one too (the sign-in form uses it)."""
    csrf = request.session.get("csrf")
    if not csrf:
        csrf = secrets.token_urlsafe(32)
        request.session["csrf"] = csrf
    return str(csrf)


def _language(request: Request, user: User | None) -> str:
    if user is not None and user.lang in LANGUAGES:
        return user.lang
    chosen = request.session.get("lang")
    if chosen in LANGUAGES:
        return str(chosen)
    return negotiate(request.headers.get("accept-language")) or DEFAULT_LANGUAGE


def load_page(request: Request, *, form_csrf_checked: bool = False) -> Page:
    """The viewer of this request; never raises for anonymous visitors (see Page.require)."""
    platform: Platform = request.app.state.platform
    user = principal = None
    projects: list[Any] = []
    if request.session.get("uid") is not None:
        with platform.db.session() as session:
            try:
                user, _ = authenticated_user(request, session, csrf_checked=form_csrf_checked)
            except Unauthenticated:
                user = None
            if user is not None:
                principal = _principal(request, session, user)
                projects = projects_of(session, user)
                session.expunge(user)
    return Page(
        request=request,
        platform=platform,
        lang=_language(request, user),
        csrf=ensure_csrf(request),
        user=user,
        principal=principal,
        projects=projects,
    )


def load_form_page(request: Request, csrf_token: str) -> tuple[Page, Forbidden | None]:
    """The viewer of a posted form, and the refusal when the form's CSRF token is not the
    session's (else None). The viewer is read without the session's own CSRF check
    (``form_csrf_checked``) only because the form's token is checked here."""
    page = load_page(request, form_csrf_checked=True)
    try:
        page.check_form_csrf(csrf_token)
    except Forbidden as exc:
        return page, exc
    return page, None


def _principal(request: Request, session: Any, user: User) -> Principal:
    """The project chosen in the project switcher, or the personal one if it is gone."""
    chosen = request.session.get("project")
    try:
        return principal_for(session, user, chosen, "session")
    except (Forbidden, NotFound):
        request.session.pop("project", None)
        return principal_for(session, user, None, "session")


def page_dependency(request: Request) -> Page:
    return load_page(request)


PageDep = Annotated[Page, Depends(page_dependency)]
