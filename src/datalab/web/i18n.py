"""Interface languages: message catalogs (``messages/<lang>.yaml``, flat ``key: text``) and the
choice of language for a request.

Every language has exactly the same keys (a test checks it); a missing key is a bug, so
:func:`translate` raises rather than showing the key to users.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

MESSAGES_DIR = Path(__file__).parent / "messages"
LANGUAGES = {"en": "English", "fr": "Français"}
DEFAULT_LANGUAGE = "en"


@functools.cache
def catalog(lang: str) -> dict[str, str]:
    data = yaml.safe_load((MESSAGES_DIR / f"{lang}.yaml").read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"messages/{lang}.yaml must be a mapping of keys to texts")
    return {str(k): str(v) for k, v in data.items()}


def translate(language: str, key: str, /, **params: Any) -> str:
    text = catalog(language if language in LANGUAGES else DEFAULT_LANGUAGE)[key]
    return text.format(**params) if params else text


def negotiate(accept_language: str | None) -> str:
    """The first supported language of an ``Accept-Language`` header (quality order)."""
    choices = []
    for index, item in enumerate((accept_language or "").split(",")):
        tag, _, quality = item.strip().partition(";q=")
        try:
            weight = float(quality) if quality else 1.0
        except ValueError:
            weight = 0.0
        if weight > 0:  # q=0 means "not this one"
            choices.append((-weight, index, tag.split("-")[0].lower()))
    for _, _, lang in sorted(choices):
        if lang in LANGUAGES:
            return lang
    return DEFAULT_LANGUAGE
