"""Who may reach a service through the platform's reverse proxy (``/s/<service-id>/``).

The proxy (:mod:`datalab.proxy`) knows nothing about users; this resolver authenticates the
connection (API token or web session), checks access with the same rule as the API
(:func:`~datalab.identity.access.check_service`, action ``use``) in the service's own project,
and withholds the caller's platform credentials from the service.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from datalab.api.deps import authenticated_user
from datalab.backends.base import Endpoint
from datalab.db import Service
from datalab.errors import DatalabError, Forbidden, NotFound
from datalab.identity.access import Action, check_service, principal_for
from datalab.platform import Platform
from datalab.proxy import Resolver


def service_resolver(platform: Platform) -> Resolver:
    async def resolve(connection: HTTPConnection, service_id: str) -> Endpoint | None:
        try:
            with platform.db.session() as session:
                user, via = authenticated_user(connection, session, proxied=True)
                row = session.get(Service, service_id)
                if row is None:
                    raise NotFound("no such service")
                try:
                    principal = principal_for(session, user, row.project_id, via)
                except Forbidden:  # not a member: the service does not exist for them
                    raise NotFound("no such service") from None
                check_service(principal, row, Action.USE)
        except DatalabError as exc:
            raise HTTPException(exc.status, exc.message) from None
        if via == "token":
            # the service must never see the user's platform token
            connection.scope["headers"] = [
                (name, value)
                for name, value in connection.scope["headers"]
                if name != b"authorization"
            ]
        return await platform.backend.endpoint(service_id)

    return resolve
