"""The CLI's HTTP client: the platform URL and API token stored by ``datalab login``.

Credentials live in ``$DATALAB_CREDENTIALS`` or ``<user config dir>/datalab/credentials.json``
(mode 0600). ``DATALAB_URL`` and ``DATALAB_TOKEN`` override them (for scripts and CI).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import platformdirs

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientError(Exception):
    """An error to print to the user as is (with the HTTP status when there is one)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def credentials_path() -> Path:
    if env := os.environ.get("DATALAB_CREDENTIALS"):
        return Path(env)
    return Path(platformdirs.user_config_dir("datalab")) / "credentials.json"


def save_credentials(url: str, token: str, user: str) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "token": token, "user": user}, handle)
    tmp.replace(path)
    return path


def load_credentials() -> dict[str, str]:
    path = credentials_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ClientError(f"cannot read {path}: {exc}; run `datalab login` again") from None
    return data if isinstance(data, dict) else {}


@dataclass
class Client:
    url: str
    token: str | None
    project: str | None = None
    timeout: float = 60.0

    @classmethod
    def from_environment(cls, url: str | None = None, project: str | None = None) -> Client:
        stored = load_credentials()
        return cls(
            url=(url or os.environ.get("DATALAB_URL") or stored.get("url") or DEFAULT_URL).rstrip(
                "/"
            ),
            token=os.environ.get("DATALAB_TOKEN") or stored.get("token"),
            project=project or os.environ.get("DATALAB_PROJECT"),
        )

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.project:
            headers["X-Datalab-Project"] = self.project
        return headers

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = httpx.request(
                method, self.url + path, headers=self._headers(), timeout=self.timeout, **kwargs
            )
        except httpx.ConnectError:
            raise ClientError(
                f"cannot reach the platform at {self.url}; is `datalab up` running? "
                "(set the URL with --url or DATALAB_URL)"
            ) from None
        except httpx.HTTPError as exc:
            raise ClientError(f"request to {self.url} failed: {exc}") from None
        return self._decode(response)

    def _decode(self, response: httpx.Response) -> Any:
        if response.status_code == 204:
            return None
        if response.is_success:
            if response.headers.get("content-type", "").startswith("application/json"):
                return response.json()
            return response.text
        raise ClientError(self._error_message(response), response.status_code)

    def _error_message(self, response: httpx.Response) -> str:
        try:
            error = response.json()["error"]
            message = error["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text.strip()[:500] or response.reason_phrase
        if response.status_code == 401 and not self.token:
            message += " (not logged in: run `datalab login`)"
        return message

    def stream_lines(self, path: str, params: dict[str, Any]) -> Iterator[str]:
        try:
            with httpx.stream(
                "GET",
                self.url + path,
                params=params,
                headers=self._headers(),
                # following logs may wait long between lines; connecting must still be quick
                timeout=httpx.Timeout(None, connect=10.0),
            ) as response:
                if not response.is_success:
                    response.read()
                    raise ClientError(self._error_message(response), response.status_code)
                yield from response.iter_lines()
        except httpx.ConnectError:
            raise ClientError(f"cannot reach the platform at {self.url}") from None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)
