"""``datalab up``: what it prints at the first start, and how it runs uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import uvicorn

from datalab.cli import server


def _up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    """Run ``datalab up`` until it would start serving; returns uvicorn's options."""
    monkeypatch.delenv("DATALAB_CONFIG", raising=False)
    monkeypatch.delenv("DATALAB_ADMIN_PASSWORD", raising=False)
    for name, value in {
        "DATALAB_BACKEND__NAME": "memory",
        "DATALAB_STORAGE__MODE": "disabled",
        "DATALAB_SECRETS__MODE": "disabled",
        **env,
    }.items():
        monkeypatch.setenv(name, value)
    served: dict[str, Any] = {}

    def run(app: Any, **options: Any) -> None:
        served.update(options)
        app.state.platform.db.dispose()

    monkeypatch.setattr(uvicorn, "run", run)
    server.up(data_dir=tmp_path / "data")
    return served


def test_a_chosen_admin_password_is_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    chosen = "the-admins-own-secret-123"
    _up(tmp_path, monkeypatch, DATALAB_ADMIN_PASSWORD=chosen)
    printed = capsys.readouterr()
    assert chosen not in printed.out + printed.err
    assert "password: the one in DATALAB_ADMIN_PASSWORD" in printed.out


def test_a_generated_admin_password_is_printed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _up(tmp_path, monkeypatch)
    first = capsys.readouterr().out
    password = next(
        line.split("password:", 1)[1].strip() for line in first.splitlines() if "password:" in line
    )
    assert len(password) >= 12
    _up(tmp_path, monkeypatch)  # the second start creates nothing, prints no password
    assert password not in capsys.readouterr().out


def test_forwarded_headers_are_not_believed_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn's default believes X-Forwarded-For from loopback, where services connect from."""
    assert _up(tmp_path, monkeypatch)["proxy_headers"] is False
    options = _up(tmp_path, monkeypatch, DATALAB_SERVER__TRUSTED_PROXIES='["10.0.0.0/8"]')
    assert options["proxy_headers"] is True
    assert options["forwarded_allow_ips"] == ["10.0.0.0/8"]
