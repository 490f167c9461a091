"""Who is calling: the client address of a request, and whose forwarded headers are believed.

A request's client address is the TCP peer, unless that peer is one of the reverse proxies of
``server.trusted_proxies``: then the server takes it from ``X-Forwarded-For`` (and the scheme
from ``X-Forwarded-Proto``). uvicorn's own default believes those headers from loopback, where
every local service connects from: a service could then choose the address the login lock-out
counts failures for and the audit log records. So ``datalab up`` runs uvicorn with
:func:`proxy_header_options`, and everything that needs the caller's address reads
:func:`client_address`.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

from datalab.config import ServerSettings


def proxy_header_options(server: ServerSettings) -> dict[str, Any]:
    """uvicorn's options for forwarded headers: believed from the trusted proxies only."""
    trusted = list(server.trusted_proxies)
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted or None}


def client_address(scope: Scope) -> str | None:
    """The client address of this request (None when the server does not know it)."""
    client = scope.get("client")
    return str(client[0]) if client else None
