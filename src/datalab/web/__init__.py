"""The web UI: server-rendered pages (Jinja2, autoescaped) with htmx and small scripts, in
English and French, branded from the configuration. See docs/web.md.

Pages call the same service layer as the REST API (``ServiceManager``, ``resolve_values``,
accounts); scripts in the browser call the JSON API (with the session's CSRF token) or the small
HTML fragments under ``/ui/``.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from datalab.web.context import STATIC_DIR, LoginRequired, redirect_to_login
from datalab.web.security import SecurityHeaders


def mount_web(app: FastAPI) -> None:
    """Add the pages, the fragments, the static files and the security headers to ``app``."""
    from datalab.web.routes import account, admin, auth, catalog, files, secrets, services

    for module in (auth, catalog, services, files, secrets, account, admin):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # starlette types handlers as taking any Exception, not the class they are registered for
    app.add_exception_handler(LoginRequired, redirect_to_login)  # type: ignore[arg-type]
    app.add_middleware(SecurityHeaders)
