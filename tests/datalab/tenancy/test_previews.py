"""A dry run (``datalab launch --dry-run``, the web launcher's preview at every keystroke) shows
what a launch would give and mints nothing: no S3 session, no Vault token, no refresh token;
placeholders stand where the credentials would be."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from datalab.db import VaultTokenRecord
from datalab.injection import MINTED_AT_LAUNCH

from .conftest import TEAM, Ledger, Tenancy

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_previews_mint_nothing(tenancy: Tenancy, ledger: Ledger) -> None:
    alice = tenancy.users["alice"]

    def minted_vault_tokens() -> int:
        with tenancy.platform.db.session() as session:
            return session.scalar(select(func.count()).select_from(VaultTokenRecord)) or 0

    before = minted_vault_tokens()
    answers = [
        await alice.call(
            "POST",
            "/api/services",
            json={"chart": "jupyter-python", "name": "preview", "dry_run": True},
            project=project,
        )
        for project in ("user-alice", TEAM)
    ]
    answers.append(
        await alice.call("GET", "/api/launch-preview", params={"chart": "jupyter-python"})
    )
    for answer in answers:
        s3, vault = answer["values"]["s3"], answer["values"]["vault"]
        shown = {
            "S3 access key": s3["accessKeyId"],
            "S3 secret key": s3["secretAccessKey"],
            "S3 session token": s3["sessionToken"],
            "refresh token": s3["credentialsAuthorization"],
            "Vault token": vault["token"],
        }
        for what, value in shown.items():
            ledger.expect_denied(
                "previews",
                f"a dry run shows a real {what}",
                value not in (MINTED_AT_LAUNCH, "********"),
            )
        assert "ASIA" not in json.dumps(answer)  # no STS session key anywhere
    assert minted_vault_tokens() == before  # no Vault token was minted
    # and the placeholders are never a service's credentials: a real launch mints them
    launched = await alice.call(
        "POST", "/api/services", json={"chart": "jupyter-python", "name": "real"}
    )
    try:
        values = (await alice.call("GET", "/api/services/real"))["values"]
        assert values["s3"]["accessKeyId"].startswith("ASIA")
        assert values["vault"]["token"] not in ("", MINTED_AT_LAUNCH)
        assert minted_vault_tokens() == before + 1
    finally:
        await alice.call("DELETE", f"/api/services/{launched['id']}")
