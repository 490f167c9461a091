"""French text normalisation for activity descriptions, and categorical variables as tokens.

One `Preprocessor` is used by training, evaluation, batch coding and the API (it is pickled
into the model), so every consumer sees the same tokens. It is configurable step by step and
fast: per-word work (stop-word test, stemming) is cached in a dict, the rest is C-level string
methods (``str.translate``) on the whole text.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import Stemmer

# Insee-style French stop words, written without accents (they are removed first).
FRENCH_STOP_WORDS = frozenset(
    [
        "a",
        "au",
        "aux",
        "avec",
        "ce",
        "ces",
        "cet",
        "cette",
        "d",
        "dans",
        "de",
        "des",
        "du",
        "elle",
        "en",
        "et",
        "eux",
        "il",
        "ils",
        "je",
        "j",
        "l",
        "la",
        "le",
        "les",
        "leur",
        "leurs",
        "lui",
        "m",
        "ma",
        "mais",
        "me",
        "meme",
        "mes",
        "moi",
        "mon",
        "n",
        "ne",
        "nos",
        "notre",
        "nous",
        "on",
        "ou",
        "par",
        "pas",
        "pour",
        "qu",
        "que",
        "qui",
        "s",
        "sa",
        "se",
        "ses",
        "son",
        "sur",
        "t",
        "ta",
        "te",
        "tes",
        "toi",
        "ton",
        "tu",
        "un",
        "une",
        "vos",
        "votre",
        "vous",
        "y",
        "c",
        "etc",
        "ete",
        "etre",
        "avoir",
        "sont",
        "est",
        "ont",
        "a",
        "as",
        "ai",
        "aie",
        "sera",
        "seront",
        "serait",
        "sans",
        "sous",
        "chez",
        "cela",
        "ceci",
        "celle",
        "celui",
        "ceux",
        "leurs",
        "afin",
        "ainsi",
        "alors",
        "aussi",
        "autre",
        "autres",
        "car",
        "comme",
        "dont",
        "donc",
        "lors",
        "tout",
        "tous",
        "toute",
        "toutes",
        "tres",
        "plus",
        "moins",
        "non",
        "oui",
        "si",
        "soit",
    ]
)


# Generic French abbreviations of activity descriptions and legal forms (words as they are after
# accent and case folding). A word maps to its replacement (one or more words, then stop words
# and stemming apply as usual); legal forms map to "" (a stop word: they say nothing about the
# activity). Only unambiguous abbreviations; configurable with `PreprocessConfig.synonyms`.
FRENCH_SYNONYMS: dict[str, str] = {
    # legal forms and company words
    "sarl": "",
    "sarlu": "",
    "eurl": "",
    "sas": "",
    "sasu": "",
    "sci": "",
    "snc": "",
    "eirl": "",
    "selarl": "",
    "ets": "etablissements",
    "etabl": "etablissements",
    "cie": "compagnie",
    # activity abbreviations
    "fab": "fabrication",
    "fabr": "fabrication",
    "fabric": "fabrication",
    "vte": "vente",
    "vtes": "ventes",
    "cial": "commercial",
    "ciale": "commerciale",
    "ciaux": "commerciaux",
    "cce": "commerce",
    "det": "detail",
    "bat": "batiment",
    "bats": "batiments",
    "btp": "batiment travaux publics",
    "trx": "travaux",
    "trvx": "travaux",
    "rep": "reparation",
    "repar": "reparation",
    "repa": "reparation",
    "instal": "installation",
    "install": "installation",
    "maint": "maintenance",
    "entr": "entretien",
    "elec": "electricite",
    "electr": "electricite",
    "plomb": "plomberie",
    "menuis": "menuiserie",
    "pdts": "produits",
    "prdts": "produits",
    "pces": "pieces",
    "prest": "prestations",
    "presta": "prestations",
    "prestas": "prestations",
    "serv": "services",
    "svc": "services",
    "sce": "service",
    "sces": "services",
    "dev": "developpement",
    "devt": "developpement",
    "dvpt": "developpement",
    "dvlpt": "developpement",
    "info": "informatique",
    "immo": "immobilier",
    "immob": "immobilier",
    "admin": "administratif",
    "adm": "administratif",
    "alim": "alimentaire",
    "equip": "equipements",
    "transp": "transport",
    "march": "marchandises",
    "mat": "materiel",
    "mater": "materiel",
    "nett": "nettoyage",
    "nettoy": "nettoyage",
    "restau": "restaurant",
    "resto": "restaurant",
    "boulang": "boulangerie",
    "patiss": "patisserie",
    "coif": "coiffure",
    "esth": "esthetique",
    "autoentrepreneur": "",
}


def _build_translation(fold: bool, punctuation: bool) -> dict[int, str | None]:
    """One `str.translate` table doing, in a single C-level pass, accent and case folding
    (``fold``: accented letters → base letters, ligatures expanded) and punctuation → space."""
    table: dict[int, str | None] = {}
    for codepoint in range(0x10000):
        if 0xD800 <= codepoint <= 0xDFFF:
            continue
        char = chr(codepoint)
        if char.isalnum():
            if not fold or char.isdigit():
                continue
            lower = char.lower()
            base = _LIGATURES.get(lower) or "".join(
                c for c in unicodedata.normalize("NFKD", lower) if c.isascii() and c.isalnum()
            )
            table[codepoint] = base or (" " if punctuation else None)
        elif punctuation and not char.isspace():
            table[codepoint] = " "
    return {k: v for k, v in table.items() if v is None or v != chr(k)}


_LIGATURES = {"œ": "oe", "æ": "ae", "ß": "ss"}
_TRANSLATIONS: dict[tuple[bool, bool], dict[int, str | None]] = {}
_DIGITS_TO_SPACE = str.maketrans("0123456789", " " * 10)


@dataclass(frozen=True)
class PreprocessConfig:
    lowercase_and_strip_accents: bool = True  # accents and case go together (one table)
    remove_punctuation: bool = True
    remove_digits: bool = True
    remove_stop_words: bool = True
    stem: bool = True
    min_word_length: int = 1
    stop_words: frozenset[str] = field(default=FRENCH_STOP_WORDS)
    # word → replacement, applied after accent/case folding, before stop words and stemming
    synonyms: Mapping[str, str] = field(default_factory=lambda: dict(FRENCH_SYNONYMS))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["stop_words"] = sorted(self.stop_words)
        data["synonyms"] = dict(sorted(self.synonyms.items()))
        return data

    @classmethod
    def from_dict(cls, data: Mapping | None) -> PreprocessConfig:
        data = dict(data or {})
        if "stop_words" in data:
            data["stop_words"] = frozenset(data["stop_words"])
        return cls(**data)


class Preprocessor:
    """Normalises texts; ``__call__`` takes a sequence of texts and returns a list of strings."""

    def __init__(self, config: PreprocessConfig | None = None):
        self._start(config or PreprocessConfig())

    def _start(self, config: PreprocessConfig) -> None:
        self.config = config
        self._word_cache: dict[str, str] = {}
        self._stemmer: Stemmer.Stemmer | None = None  # made on first use

    def __getstate__(self) -> dict:
        return {"config": self.config.to_dict()}

    def __setstate__(self, state: dict) -> None:
        self._start(PreprocessConfig.from_dict(state["config"]))

    def _table(self) -> dict[int, str | None] | None:
        key = (self.config.lowercase_and_strip_accents, self.config.remove_punctuation)
        if not any(key):
            return None
        if key not in _TRANSLATIONS:
            _TRANSLATIONS[key] = _build_translation(*key)
        return _TRANSLATIONS[key]

    def _normalise_word(self, word: str) -> str:
        """Synonym replaced; stop word → ''; otherwise the stem (cached)."""
        config = self.config
        if word in config.synonyms:
            replacement = config.synonyms[word]
            out = " ".join(
                w for w in (self._normalise_plain(part) for part in replacement.split()) if w
            )
            self._word_cache[word] = out
            return out
        out = self._normalise_plain(word)
        self._word_cache[word] = out
        return out

    def _normalise_plain(self, word: str) -> str:
        config = self.config
        if (config.remove_stop_words and word in config.stop_words) or len(
            word
        ) < config.min_word_length:
            out = ""
        elif config.stem:
            if self._stemmer is None:
                self._stemmer = Stemmer.Stemmer("french")
            out = self._stemmer.stemWord(word)
        else:
            out = word
        return out

    def text(self, text: object) -> str:
        return self([text])[0]

    def __call__(self, texts: Iterable[object]) -> list[str]:
        config = self.config
        table = self._table()
        cache = self._word_cache
        normalise_word = self._normalise_word
        out = []
        for text in texts:
            if text is None or (isinstance(text, float) and math.isnan(text)):
                out.append("")
                continue
            text = str(text)
            if table is not None:
                text = text.translate(table)
            if config.remove_digits:
                text = text.translate(_DIGITS_TO_SPACE)
            words = text.split()
            stemmed = [cache[w] if w in cache else normalise_word(w) for w in words]
            out.append(" ".join(w for w in stemmed if w))
        return out


def categorical_tokens(
    values: Mapping[str, Sequence[object]], names: Sequence[str] | None = None
) -> list[str]:
    """Insee's practice: each categorical variable becomes one token ``<NAME>_<value>``.

    ``values`` maps a column name to its values; missing values give ``<NAME>_NaN`` so that
    "unknown" is a feature of its own. Returns one space-joined token string per row.
    """
    names = list(names or values)
    columns = [values[name] for name in names]
    if not columns:
        return []
    prefixes = [name.upper().strip("_") for name in names]
    out = []
    for row in zip(*columns, strict=True):
        out.append(" ".join(f"{p}_{_token_value(v)}" for p, v in zip(prefixes, row, strict=True)))
    return out


def _token_value(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return "NaN"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return "".join(c for c in str(value) if c.isalnum()) or "NaN"
