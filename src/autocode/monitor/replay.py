"""Traffic replay: real descriptions sent to a running prediction API at a given rate.

The descriptions come from labelled files (by default the 1,000 expert-coded descriptions of
``../shared/data/annotations/labelstudio_dev1000.csv`` and ``examples50.csv`` of the nomenclature
folder). A controlled drift can be applied, reproducibly (one seed):

- **a shifted mix of sections**: rows whose expert code is in the given sections are drawn
  ``drift_factor`` times more often (needs the nomenclature to know each code's section);
- **new wording**: a share of the texts is rewritten (upper case without accents, common
  abbreviations, an administrative prefix), as a new declaration form would write them.

This lets the whole chain be shown and tested: API → spool → S3 → Parquet → metrics → dashboard.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from autocode.nomenclature import Nomenclature

ABBREVIATIONS = {
    "fabrication": "fab.",
    "commerce": "cce",
    "vente": "vte",
    "services": "svces",
    "activité": "act.",
    "activités": "act.",
    "entreprise": "ets",
    "entreprises": "ets",
    "travaux": "trvx",
    "location": "loc.",
    "restauration": "resto",
    "conseil": "cons.",
    "détail": "dét.",
    "gros": "grs",
    "transport": "transp.",
    "installation": "install.",
    "prestations": "presta",
    "développement": "dév.",
}
PREFIXES = ("ACTIVITE PRINCIPALE : ", "OBJET SOCIAL - ", "AUTRE : ", "")


@dataclass
class ReplayOptions:
    rate: float = 10.0  # requests per second
    count: int = 200  # requests
    batch: int = 1  # descriptions per request
    seed: int = 0
    drift_sections: tuple[str, ...] = ()
    drift_factor: float = 5.0
    drift_wording: float = 0.0  # share of texts rewritten
    k: int = 2
    timeout_s: float = 30.0


@dataclass
class ReplayResult:
    sent: int = 0
    predictions: int = 0
    automatic: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def auto_rate(self) -> float:
        return self.automatic / self.predictions if self.predictions else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "predictions": self.predictions,
            "automatic": self.automatic,
            "auto_rate": self.auto_rate,
            "failures": self.failures,
            "errors": self.errors[:10],
            "seconds": round(self.seconds, 3),
        }


def default_inputs() -> list[Path]:
    from autocode.nomenclature import nomenclature_folder

    folder = nomenclature_folder()
    return [folder.parent / "annotations" / "labelstudio_dev1000.csv", folder / "examples50.csv"]


def load_descriptions(
    paths: Sequence[Path] | None, nomenclature: Nomenclature | None = None
) -> pd.DataFrame:
    """``text`` and ``code`` (expert code, may be empty) and ``section`` of each description."""
    frames = []
    for path in paths or default_inputs():
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such file of descriptions")
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        if "text_description" not in frame.columns:
            raise ValueError(f"{path}: no text_description column (columns: {list(frame.columns)})")
        code = frame["code"] if "code" in frame.columns else ""
        frames.append(pd.DataFrame({"text": frame["text_description"], "code": code}))
    table = pd.concat(frames, ignore_index=True)
    table = table[table["text"].str.strip() != ""].reset_index(drop=True)
    if table.empty:
        raise ValueError("no descriptions to replay")
    table["section"] = [_section(c, nomenclature) for c in table["code"]]
    return table


def _section(code: str, nomenclature: Nomenclature | None) -> str:
    if nomenclature is None or not code:
        return ""
    found = nomenclature.find(code)
    if found is None:
        return ""
    return nomenclature.path(found).get("section", "")


def sampling_weights(table: pd.DataFrame, options: ReplayOptions) -> np.ndarray:
    weights = np.ones(len(table))
    if options.drift_sections:
        chosen = table["section"].isin(options.drift_sections).to_numpy()
        if not chosen.any():
            raise ValueError(
                f"no description of section(s) {', '.join(options.drift_sections)} to over-sample"
            )
        weights[chosen] *= options.drift_factor
    return weights / weights.sum()


def reword(text: str, rng: np.random.Generator) -> str:
    """The same activity in another wording: upper case without accents, abbreviations, an
    administrative prefix."""
    words = []
    for word in re.split(r"(\s+)", text.lower()):
        words.append(ABBREVIATIONS.get(word, word))
    plain = unicodedata.normalize("NFKD", "".join(words))
    plain = "".join(c for c in plain if not unicodedata.combining(c)).upper()
    return PREFIXES[int(rng.integers(0, len(PREFIXES)))] + plain


def plan(table: pd.DataFrame, options: ReplayOptions) -> list[list[str]]:
    """The texts of each request, drawn with the options' seed (the same plan every time)."""
    rng = np.random.default_rng(options.seed)
    weights = sampling_weights(table, options)
    rows = rng.choice(len(table), size=options.count * options.batch, p=weights)
    texts = table["text"].to_numpy()[rows].tolist()
    if options.drift_wording > 0:
        changed = rng.random(len(texts)) < options.drift_wording
        texts = [reword(t, rng) if c else t for t, c in zip(texts, changed, strict=True)]
    return [texts[i : i + options.batch] for i in range(0, len(texts), options.batch)]


def replay(
    api: str,
    table: pd.DataFrame,
    options: ReplayOptions,
    *,
    headers: dict[str, str] | None = None,
    uds: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ReplayResult:
    """Send the plan to ``api`` at ``options.rate`` requests per second (one at a time, paced
    on a fixed schedule so that a slow answer does not lower the average rate)."""
    import httpx

    result = ReplayResult()
    requests = plan(table, options)
    transport = httpx.HTTPTransport(uds=uds) if uds else None
    interval = 1.0 / options.rate if options.rate > 0 else 0.0
    started = time.monotonic()
    with httpx.Client(
        base_url=api.rstrip("/"),
        headers=headers or {},
        timeout=options.timeout_s,
        transport=transport,
    ) as client:
        for index, texts in enumerate(requests):
            delay = started + index * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                if len(texts) == 1:
                    response = client.get("/predict", params={"text": texts[0], "k": options.k})
                else:
                    body = {"items": [{"text": t} for t in texts], "k": options.k}
                    response = client.post("/predict", json=body)
            except httpx.TransportError as exc:
                result.failures += 1
                result.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            result.sent += 1
            if response.status_code != 200:
                result.failures += 1
                result.errors.append(f"{response.status_code}: {response.text[:200]}")
                continue
            body = response.json()
            answers = body.get("results", [body])
            for answer in answers:
                result.predictions += 1
                result.automatic += bool(answer["auto"])
                result.ids.append(answer["id"])
            if progress and (index + 1) % max(1, len(requests) // 10) == 0:
                progress(f"{index + 1}/{len(requests)} requests, {result.failures} failed")
    result.seconds = time.monotonic() - started
    return result
