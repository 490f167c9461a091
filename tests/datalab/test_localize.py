"""Error messages in the caller's language: the French catalog stays in step with the code,
and the API and the web pages answer in French when asked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from datalab.http.localize import CATALOG_DIR, localize, localize_details

from .conftest import Env

pytestmark = pytest.mark.anyio

SOURCE = Path(__file__).resolve().parents[2] / "src" / "datalab"
PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def _source_text() -> str:
    """Every Python source of datalab with implicitly concatenated literals joined."""
    text = "\n".join(p.read_text() for p in SOURCE.rglob("*.py"))
    return re.sub(r"\"\s*\n\s*f?\"", "", text)


def test_every_french_entry_matches_a_message_of_the_code() -> None:
    entries = yaml.safe_load((CATALOG_DIR / "fr.yaml").read_text(encoding="utf-8"))
    source = _source_text()
    assert len(entries) > 50
    for entry in entries:
        english, french = entry["en"], entry["fr"]
        assert sorted(PLACEHOLDER.findall(english)) == sorted(PLACEHOLDER.findall(french)), entry
        for literal in PLACEHOLDER.split(english)[::2]:
            literal = literal.strip(" :;,()")
            if len(literal) >= 4:
                assert literal in source, f"{english!r}: {literal!r} is no longer in the code"


def test_localize_keeps_the_varying_parts_and_falls_back_to_english() -> None:
    message = "no secret 'user-ada/db'"
    assert localize(message, "fr") == "aucun secret 'user-ada/db'"
    assert localize(message, "en") == message
    assert localize("something the catalog does not know", "fr") == (
        "something the catalog does not know"
    )
    several = "invalid values for chart 'x':\n- a: expected integer, got string \"z\""
    assert localize(several, "fr") == (
        "valeurs invalides pour le chart 'x' :\n- a : integer attendu, reçu string \"z\""
    )
    details = [{"path": "a", "message": 'expected integer, got string "z"'}]
    assert localize_details(details, "fr")[0]["message"] == 'integer attendu, reçu string "z"'


async def test_api_errors_follow_accept_language(env: Env) -> None:
    ada = await env.user("ada")
    french = {**ada.headers(), "Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"}
    missing = await env.http.get("/api/services/nope", headers=french)
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "ce service n'existe pas dans ce projet"
    assert missing.headers["content-language"] == "fr"
    english = await env.http.get("/api/services/nope", headers=ada.headers())
    assert english.json()["error"]["message"] == "no such service in this project"
    bad = await env.http.post(
        "/api/services",
        headers=french,
        json={"chart": "jupyter-python", "values": {"resources": {"limits": {"cpu": "lots"}}}},
    )
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert error["message"].startswith("valeurs invalides pour le chart 'jupyter-python' :")
    assert "ne correspond pas au motif" in error["details"][0]["message"]
    unknown_route = await env.http.get("/api/nothing-here", headers=french)
    assert unknown_route.json()["error"]["message"].startswith("aucune route /api/nothing-here")
