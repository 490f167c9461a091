"""The identity provider's own tokens, for an external S3 STS or Vault that trust the provider
rather than the platform (``storage.web_identity`` / ``secrets.web_identity``: ``oidc``), as
MinIO and Vault trust Keycloak in Onyxia's deployments.

The ID token and refresh token of a user's last sign-in are kept server-side
(:class:`~datalab.db.ProviderToken`), because credentials are minted long after the browser
left: launches from the CLI or the API, and the S3 refreshes of running services. A token that
expires within :data:`MARGIN_S` is renewed with the refresh token first; when the provider
cannot renew it, the user is told to sign in again. Local accounts (no provider sign-in) get
that message too: the servers trust only the provider.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Protocol

from datalab.db import Database, ProviderToken
from datalab.errors import ProviderSignInRequired, Unauthenticated
from datalab.identity import accounts
from datalab.identity.oidc import ProviderTokenSet

#: an ID token with less left than this is renewed before being handed to S3 or Vault
MARGIN_S = 30


class TokenRefresher(Protocol):
    """What renews the tokens: the provider's client (`OidcClient`)."""

    async def refresh(self, refresh_token: str) -> ProviderTokenSet: ...


class ProviderTokens:
    def __init__(self, db: Database, client: TokenRefresher) -> None:
        self.db = db
        self.client = client
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def save(self, user_id: int, tokens: ProviderTokenSet) -> None:
        expires_at = datetime.fromtimestamp(tokens.expires_at, UTC)
        with self.db.session() as session:
            row = session.get(ProviderToken, user_id)
            if row is None:
                row = ProviderToken(user_id=user_id)
                session.add(row)
            row.id_token = tokens.id_token
            row.id_token_expires_at = expires_at
            row.refresh_token = tokens.refresh_token

    def _load(self, user_name: str) -> tuple[int, ProviderToken | None]:
        with self.db.session() as session:
            user = accounts.get_user(session, user_name)
            row = session.get(ProviderToken, user.id)
            if row is not None:
                session.expunge(row)
            return user.id, row

    async def id_token(self, user_name: str, consumer: str) -> str:
        """A valid ID token of ``user_name`` from the provider, for ``consumer`` (named in
        errors: "S3", "Vault")."""
        async with self._locks[user_name]:  # rotating refresh tokens are single-use
            user_id, row = self._load(user_name)
            if row is None:
                raise ProviderSignInRequired(
                    f"{consumer} trusts only the identity provider, and {user_name!r} has not "
                    "signed in with it: sign in with the identity provider in the web UI, then "
                    "try again"
                )
            if row.id_token_expires_at.timestamp() - time.time() > MARGIN_S:
                return row.id_token
            if row.refresh_token:
                try:
                    renewed = await self.client.refresh(row.refresh_token)
                except Unauthenticated as exc:
                    self._forget_refresh_token(user_id)
                    raise ProviderSignInRequired(
                        f"your sign-in with the identity provider has expired and could not be "
                        f"renewed ({exc.message}): sign in again in the web UI; {consumer} "
                        "trusts only the identity provider"
                    ) from None
                self.save(user_id, renewed)
                return renewed.id_token
            raise ProviderSignInRequired(
                "your sign-in with the identity provider has expired (it gave no refresh "
                f"token): sign in again in the web UI; {consumer} trusts only the identity "
                "provider"
            )

    def _forget_refresh_token(self, user_id: int) -> None:
        with self.db.session() as session:
            row = session.get(ProviderToken, user_id)
            if row is not None:
                row.refresh_token = None
