"""Sign in and out, language and project switching, the branding stylesheet."""

from __future__ import annotations

import contextlib
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from datalab.answers import ServiceDetail, ServiceListed
from datalab.errors import DatalabError
from datalab.http.deps import end_web_session, sign_in
from datalab.http.schemas import Credentials
from datalab.http.views import config_out, list_configs
from datalab.identity.access import principal_for
from datalab.web.context import Page, PageDep, load_form_page
from datalab.web.i18n import LANGUAGES

router = APIRouter(include_in_schema=False)


def _oidc_provider(page: Page) -> str | None:
    """The name on the "Sign in with ..." button, when sign-in with a provider is configured."""
    oidc = page.platform.settings.oidc
    if not (oidc.enabled and oidc.issuer_url and oidc.client_id):
        return None
    return page.branding.oidc_provider_name or urlsplit(oidc.issuer_url).hostname or "OIDC"


def _safe_next(next_url: str | None) -> str:
    """Only local paths: an open redirect would help phishing."""
    if next_url and next_url.startswith("/") and not next_url.startswith("//"):
        return next_url
    return "/"


@router.get("/login")
def login_form(page: PageDep, next: str | None = None) -> Response:
    if page.principal is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_form(page, 200, next, None, "")


def _login_form(
    page: Page, status: int, next: str | None, error: str | None, username: str
) -> Response:
    return page.render(
        "login.html",
        status=status,
        next=_safe_next(next),
        error=error,
        username=username,
        oidc_provider=_oidc_provider(page),
    )


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    page, refused = load_form_page(request, csrf_token)
    if refused is not None:
        return _login_form(page, refused.status, next, page.message(refused), username)
    try:
        credentials = Credentials(username=username, password=password)
    except ValidationError:
        return _login_form(page, 422, next, page.t("login.missing"), username)
    platform = page.platform
    try:
        with platform.db.session() as session:
            user, _ = sign_in(platform, session, request, credentials)
            lang = page.request.session.get("lang")
            if lang in LANGUAGES and lang != user.lang and user.lang == "en":
                user.lang = lang  # the language picked on the sign-in page sticks
    except DatalabError as exc:
        message = page.t("login.failed") if exc.status == 401 else page.message(exc)
        return _login_form(page, exc.status, next, message, username)
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout")
def logout(request: Request, csrf_token: Annotated[str, Form()] = "") -> Response:
    page, refused = load_form_page(request, csrf_token)
    if refused is not None:
        return page.error(refused)
    with page.platform.db.session() as session:
        end_web_session(request, session)
    return RedirectResponse("/login", status_code=303)


@router.post("/ui/lang")
def switch_language(
    request: Request,
    lang: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    page, refused = load_form_page(request, csrf_token)
    if refused is not None:
        return page.error(refused)
    if lang not in LANGUAGES:
        return page.render("error.html", status=422, message=page.t("lang.unknown", lang=lang))
    request.session["lang"] = lang
    if page.user is not None:
        with page.platform.db.session() as session:
            from datalab.db import User

            row = session.get(User, page.user.id)
            if row is not None:
                row.lang = lang
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/ui/project")
def switch_project(
    request: Request,
    project: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    page, refused = load_form_page(request, csrf_token)
    if refused is not None:
        return page.error(refused)
    try:
        page.require()
        assert page.user is not None
        with page.platform.db.session() as session:
            principal_for(session, page.user, project, "session")  # membership check
    except DatalabError as exc:
        return page.error(exc)
    request.session["project"] = project
    return RedirectResponse(_safe_next(next), status_code=303)


@router.get("/ui/theme.css")
def theme(page: PageDep) -> Response:
    """Branding colours as CSS variables (validated #rrggbb in the settings)."""
    branding = page.branding
    css = f":root {{ --primary: {branding.primary_colour}; --accent: {branding.accent_colour}; }}\n"
    return Response(css, media_type="text/css", headers={"Cache-Control": "no-cache"})


@router.get("/")
async def home(page: PageDep) -> Response:
    principal = page.require()
    services = await page.platform.services.list(principal)
    with page.platform.db.session() as session:
        saved = [config_out(c) for c in list_configs(session, principal)]
    # the latest five, newest first; the running ones with their URLs (open, copy)
    recent: list[ServiceListed | ServiceDetail] = []
    for listed in services[-5:][::-1]:
        shown: ServiceListed | ServiceDetail = listed
        if listed.phase == "running":  # with its URLs
            with contextlib.suppress(DatalabError):
                shown = await page.platform.services.get(principal, listed.id)
        recent.append(shown)
    return page.render(
        "home.html",
        saved=saved,
        quota=page.platform.services.quota(principal),
        services=services,
        recent=recent,
        active=[s for s in services if s.phase in ("building", "starting", "running")],
    )
