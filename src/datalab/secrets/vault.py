"""A small asynchronous client for the Vault HTTP API (OpenBao speaks the same API).

Only what the platform needs: system calls to configure a KV v2 mount, JWT auth and policies,
JWT login, and the KV v2 operations of the secrets API. Errors never include secret values:
Vault's own error messages do not contain request bodies, and ours name paths only.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from datalab.errors import (
    NotFound,
    SecretsUnavailable,
    VaultDenied,
    VaultError,
    VaultRefused,
)


class VaultClient:
    def __init__(self, address: str, token: str = "", timeout_s: float = 10.0) -> None:
        self.address = address.rstrip("/")
        self.token = token
        self._http = httpx.AsyncClient(base_url=self.address, timeout=timeout_s)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        token: str | None = None,
        params: dict[str, str] | None = None,
        allow: tuple[int, ...] = (),
    ) -> dict[str, Any] | None:
        """Call ``/v1/<path>``; returns the decoded body (None for 204 or an allowed status)."""
        headers = {}
        chosen = self.token if token is None else token
        if chosen:
            headers["X-Vault-Token"] = chosen
        try:
            # percent-encoded: a user's secret name may hold '?', '#' or '%' (names, not syntax)
            url = "/v1/" + quote(path.lstrip("/"), safe="/")
            response = await self._http.request(
                method, url, json=json, headers=headers, params=params
            )
        except httpx.TransportError as exc:
            raise SecretsUnavailable(
                f"the secrets store at {self.address} is unavailable: {type(exc).__name__}; "
                "try again shortly"
            ) from None
        if response.status_code in allow:
            return None
        if response.status_code == 503:
            raise SecretsUnavailable(f"the secrets store at {self.address} is sealed or starting")
        if response.status_code == 404 and method in ("GET", "LIST"):
            raise NotFound(f"no secret at {path.split('/', 2)[-1]!r}")
        if response.status_code >= 400:
            try:
                errors = response.json().get("errors") or []
            except ValueError:
                errors = []
            message = "; ".join(str(e) for e in errors) or response.reason_phrase
            if response.status_code == 403:
                raise VaultDenied(f"permission denied on {path!r}: {message}")
            if response.status_code == 400:
                raise VaultRefused(f"the secrets store refused {method} {path}: {message}")
            raise VaultError(f"the secrets store refused {method} {path}: {message}")
        if response.status_code == 204 or not response.content:
            return None
        return dict(response.json())

    async def login_jwt(self, mount: str, role: str, jwt: str) -> tuple[str, str, int]:
        """Exchange a JWT for a Vault token; returns (token, its accessor, ttl in seconds).

        The accessor names the token without granting it: with it, an admin token revokes it
        (``auth/token/revoke-accessor``)."""
        answer = await self.request(
            "POST", f"auth/{mount}/login", json={"role": role, "jwt": jwt}, token=""
        )
        assert answer is not None
        auth = answer["auth"]
        return str(auth["client_token"]), str(auth["accessor"]), int(auth["lease_duration"])

    async def revoke_accessor(self, accessor: str) -> None:
        """Revoke the token an accessor names, and its children (this client's token needs
        ``update`` on ``auth/token/revoke-accessor``). An accessor Vault no longer knows
        (the token expired or was revoked) is not an error (Vault answers 400, OpenBao 200
        with a warning)."""
        await self.request(
            "POST", "auth/token/revoke-accessor", json={"accessor": accessor}, allow=(400,)
        )
