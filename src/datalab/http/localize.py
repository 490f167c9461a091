"""Error messages in the caller's language.

The API answers in the language of the request's ``Accept-Language`` header (the web UI sends
its page language; the CLI and scripts get English unless they ask). Messages are written in
English where they are raised; ``error_messages/<lang>.yaml`` is a gettext-style catalog keyed
by the English *template*, ``{name}`` marking a part that varies (a path, a name, a number),
kept as is in the translation:

    - en: "there is no secret {path}; create it ..."
      fr: "il n'existe pas de secret {path} ; créez-le ..."

A message without an entry stays in English (a test checks that every entry still matches a
message of the code, so a reworded message cannot silently lose its translation).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import yaml

CATALOG_DIR = Path(__file__).parent / "error_messages"
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


@functools.cache
def _entries(lang: str) -> tuple[tuple[re.Pattern[str], str], ...]:
    path = CATALOG_DIR / f"{lang}.yaml"
    if not path.is_file():
        return ()
    entries = []
    for entry in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
        english, translated = str(entry["en"]), str(entry[lang])
        pattern, position = [], 0
        for match in _PLACEHOLDER.finditer(english):
            pattern.append(re.escape(english[position : match.start()]))
            pattern.append(f"(?P<{match.group(1)}>[^\\n]+?)")
            position = match.end()
        pattern.append(re.escape(english[position:]))
        entries.append((re.compile("".join(pattern)), translated))
    return tuple(entries)


def localize(message: str, lang: str) -> str:
    """``message`` in ``lang`` when the catalog has its template, else unchanged."""
    if lang == "en" or not message:
        return message
    for pattern, translated in _entries(lang):
        match = pattern.fullmatch(message)
        if match is not None:
            return translated.format_map(match.groupdict())
    # multi-line messages (several values problems): translate line by line
    if "\n" in message:
        return "\n".join(localize(line, lang) for line in message.split("\n"))
    if message.startswith("- "):
        return "- " + localize(message[2:], lang)
    return message


def localize_details(details: Any, lang: str) -> Any:
    """The ``message`` fields of error details (values problems), localized."""
    if lang == "en" or not isinstance(details, list):
        return details
    return [
        {**item, "message": localize(str(item["message"]), lang)}
        if isinstance(item, dict) and "message" in item
        else item
        for item in details
    ]
