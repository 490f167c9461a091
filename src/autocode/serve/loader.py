"""Loading the model to serve, and hot reload.

Sources (the ``model`` setting):

- ``models:/<name>@<alias>``: the registry version the alias points to. Polled every
  ``poll_interval_s``; when the alias moves, the new version is downloaded and loaded in a
  background thread, warmed up, then swapped in with one reference assignment. A request reads
  the reference once and uses that model to the end, so it is answered, and its records are
  labelled, by exactly one version, and no request ever waits for or fails because of a reload.
- ``models:/<name>/<version>``, ``runs:/...`` and other MLflow URIs: loaded once.
- a local directory (``autocode train --output``, a pyfunc saved with
  ``mlflow.pyfunc.save_model``): reloaded when its ``MLmodel`` changes (a new ``model_uuid``).

Start-up never waits for the model: loading is retried in the background with exponential
backoff (``load_retry_initial_s`` doubling up to ``load_retry_max_s``, with jitter) while
``/ready`` answers 503 with the reason.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import hashlib
import logging
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from autocode.errors import UserError
from autocode.serve.predictor import Predictor

log = logging.getLogger(__name__)


class ModelSourceError(UserError, ValueError):
    """The ``model`` setting cannot be understood."""


@dataclass(frozen=True)
class Ref:
    """What a source points to now: enough to tell whether it changed, and to load it."""

    version: str
    uri: str
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class LoadedModel:
    name: str
    version: str
    source_kind: str  # registry | local | uri
    uri: str  # what was loaded (models:/name/3, a directory, runs:/...)
    requested: str  # the model setting (models:/name@champion)
    alias: str | None
    run_id: str | None
    model_uuid: str | None
    predictor: Predictor
    loaded_at: str
    load_seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    registry: dict[str, Any] = field(default_factory=dict)

    @property
    def coder(self) -> Any:
        return self.predictor.coder

    def short(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}

    @property
    def json_ref(self) -> str:
        """`short()` as JSON text."""
        import json

        return json.dumps(self.short(), ensure_ascii=False, separators=(",", ":"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _mlmodel(directory: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load((directory / "MLmodel").read_text())
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def _load_directory(directory: Path) -> Predictor:
    from autocode.model import load_coder

    return Predictor(load_coder(str(directory)))


def _download_and_load(uri: str) -> tuple[Predictor, Any]:
    """The predictor and MLmodel ``model_uuid`` of the MLflow artifact at ``uri``.

    The download goes to a temporary directory removed once the model is in memory.
    """
    import mlflow.artifacts

    tmp = Path(tempfile.mkdtemp(prefix="autocode-api-model-"))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp)))
        return _load_directory(local), _mlmodel(local).get("model_uuid")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # everything is in memory now


def _run_details(run_id: str | None) -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
    """Metrics, params and (non-internal) tags of the MLflow run that produced the model."""
    if not run_id:
        return {}, {}, {}
    import mlflow

    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except Exception as exc:  # the run may be gone or unreadable: the model still serves
        log.warning("cannot read run %s of the model: %s", run_id, exc)
        return {}, {}, {}
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    return dict(run.data.metrics), dict(run.data.params), tags


class Source:
    kind = "uri"
    follows = False  # does polling make sense?

    def __init__(self, spec: str):
        self.spec = spec

    def resolve(self) -> Ref:
        raise NotImplementedError

    def load(self, ref: Ref) -> LoadedModel:
        raise NotImplementedError

    def _load_artifact(
        self, ref: Ref, name: str, alias: str | None, registry: dict[str, Any] | None = None
    ) -> LoadedModel:
        """Download the MLflow artifact ``ref.uri`` and load it, with its run's details."""
        started = time.perf_counter()
        predictor, uuid = _download_and_load(ref.uri)
        metrics, params, tags = _run_details(ref.run_id)
        return LoadedModel(
            name=name,
            version=ref.version,
            source_kind=self.kind,
            uri=ref.uri,
            requested=self.spec,
            alias=alias,
            run_id=ref.run_id,
            model_uuid=uuid,
            predictor=predictor,
            loaded_at=_now(),
            load_seconds=time.perf_counter() - started,
            metrics=metrics,
            params=params,
            tags=tags,
            registry={} if registry is None else registry,
        )

    def __str__(self) -> str:
        return self.spec


class RegistrySource(Source):
    """``models:/<name>@<alias>`` (followed) or ``models:/<name>/<version>`` (fixed)."""

    kind = "registry"

    def __init__(self, spec: str, name: str, alias: str | None, version: str | None):
        super().__init__(spec)
        self.name, self.alias, self.version = name, alias, version
        self.follows = alias is not None

    def resolve(self) -> Ref:
        import mlflow

        client = mlflow.MlflowClient()
        if self.alias is not None:
            mv = client.get_model_version_by_alias(self.name, self.alias)
        else:
            mv = client.get_model_version(self.name, str(self.version))
        info = {
            "source": mv.source,
            "creation_timestamp": mv.creation_timestamp,
            "description": mv.description or "",
            "aliases": list(getattr(mv, "aliases", []) or []),
        }
        return Ref(str(mv.version), f"models:/{self.name}/{mv.version}", mv.run_id, info)

    def load(self, ref: Ref) -> LoadedModel:
        return self._load_artifact(ref, self.name, self.alias, registry=ref.extra)


class LocalSource(Source):
    """A local model directory; its version is ``local-<model_uuid[:8]>``."""

    kind = "local"
    follows = True

    def __init__(self, spec: str, name: str | None = None):
        super().__init__(spec)
        self.path = Path(spec).expanduser()
        self.name = name or self.path.resolve().name

    def resolve(self) -> Ref:
        if not self.path.is_dir():
            raise FileNotFoundError(f"model directory {self.path} not found")
        uuid = _mlmodel(self.path).get("model_uuid")
        if not uuid:
            coder_json = next(
                (
                    p
                    for p in (self.path / "coder.json", self.path / "artifacts/coder/coder.json")
                    if p.is_file()
                ),
                None,
            )
            if coder_json is None:
                raise FileNotFoundError(f"{self.path} is not a model directory (no MLmodel)")
            uuid = hashlib.sha256(coder_json.read_bytes()).hexdigest()
        return Ref(f"local-{str(uuid)[:8]}", str(self.path), None, {"model_uuid": uuid})

    def load(self, ref: Ref) -> LoadedModel:
        started = time.perf_counter()
        predictor = _load_directory(self.path)
        if self.resolve() != ref:  # rewritten while we read it: try again at the next poll
            raise RuntimeError(f"{self.path} changed while it was being loaded")
        return LoadedModel(
            name=self.name,
            version=ref.version,
            source_kind=self.kind,
            uri=str(self.path.resolve()),
            requested=self.spec,
            alias=None,
            run_id=None,
            model_uuid=ref.extra.get("model_uuid"),
            predictor=predictor,
            loaded_at=_now(),
            load_seconds=time.perf_counter() - started,
            tags={k: str(v) for k, v in (predictor.coder.info or {}).items()},
        )


class UriSource(Source):
    """Any other MLflow artifact URI (``runs:/<id>/model``, ``s3://...``): loaded once."""

    def resolve(self) -> Ref:
        run_id = None
        if self.spec.startswith("runs:/"):
            run_id = self.spec.removeprefix("runs:/").split("/")[0]
        digest = hashlib.sha256(self.spec.encode()).hexdigest()[:8]
        return Ref(f"run-{run_id[:8]}" if run_id else f"uri-{digest}", self.spec, run_id)

    def load(self, ref: Ref) -> LoadedModel:
        return self._load_artifact(ref, self.spec.rstrip("/").rsplit("/", 1)[-1], None)


def make_source(spec: str, model_name: str | None = None) -> Source:
    spec = spec.strip()
    if not spec:
        raise ModelSourceError(
            "no model to serve: set AUTOCODE_API_MODEL or --model (models:/<name>@<alias>, "
            "models:/<name>/<version>, runs:/..., or a local model directory)"
        )
    if spec.startswith("models:/"):
        rest = spec.removeprefix("models:/").strip("/")
        if "@" in rest:
            name, _, alias = rest.partition("@")
            if name and alias and "/" not in alias:
                return RegistrySource(spec, name, alias, None)
        elif rest.count("/") == 1:
            name, version = rest.split("/")
            if name and version.isdigit():
                return RegistrySource(spec, name, None, version)
        raise ModelSourceError(
            f"{spec!r}: expected models:/<name>@<alias> or models:/<name>/<version>"
        )
    if "://" in spec or spec.startswith(("runs:/", "models:/")):
        return UriSource(spec)
    return LocalSource(spec, model_name)


class ModelManager:
    """Holds the model being served (`current`) and replaces it in the background."""

    def __init__(
        self,
        source: Source,
        *,
        poll_interval_s: float = 30.0,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 60.0,
        observer: Any = None,
    ):
        self.source = source
        self.poll_interval_s = poll_interval_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.observer = observer  # metrics.Metrics (model_swapped, model_loads...)
        self.current: LoadedModel | None = None
        self.attempts = 0
        self.last_error: str | None = None
        self.reloads = 0
        self._failed: tuple[str, float] | None = None  # a version that failed to load, when
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "autocode-model-loader")

    def status(self) -> str:
        if self.current is not None:
            return f"serving {self.current.name} version {self.current.version}"
        if self.last_error:
            return (
                f"loading {self.source} (attempt {self.attempts} failed: {self.last_error}; "
                "retrying)"
            )
        return f"loading {self.source}"

    async def run(self, stop: asyncio.Event) -> None:
        """Load (retrying with backoff), then follow the source until ``stop``."""
        delay = self.retry_initial_s
        while self.current is None and not stop.is_set():
            try:
                await self.reload()
            except Exception as exc:
                wait = delay * random.uniform(0.8, 1.2)  # jitter
                log.warning(
                    "loading %s failed (attempt %d), retrying in %.1f s: %s",
                    self.source,
                    self.attempts,
                    wait,
                    exc,
                )
                delay = min(self.retry_max_s, delay * 2)
                if await _wait(stop, wait):
                    return
        if not (self.source.follows and self.poll_interval_s > 0):
            return
        failures = 0
        while not await _wait(stop, self.poll_interval_s):
            try:
                await self.reload(only_if_changed=True)
                failures = 0
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning(
                        "checking %s for a new version failed (%d in a row; still "
                        "serving version %s): %s",
                        self.source,
                        failures,
                        self.current.version if self.current else "-",
                        exc,
                    )

    async def reload(self, only_if_changed: bool = False) -> bool:
        """Resolve the source; load and swap in what it points to (when it differs from the
        current model, with ``only_if_changed``). True when a new model was swapped in."""
        loop = asyncio.get_running_loop()
        ref: Ref | None = None
        try:
            ref = await loop.run_in_executor(self._executor, self.source.resolve)
            current = self.current
            if only_if_changed and current is not None and ref.version == current.version:
                return False
            if only_if_changed and self._recently_failed(ref.version):
                return False  # it failed to load a moment ago: not again at every poll
            log.info("loading %s version %s", self.source, ref.version)
            model = await loop.run_in_executor(self._executor, self._load, ref)
        except Exception as exc:
            self.attempts += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if ref is not None:
                self._failed = (ref.version, time.monotonic())
            if self.observer is not None:
                self.observer.model_loads.labels("error").inc()
            raise
        old, self.current = self.current, model  # the swap: one reference assignment
        self.last_error = None
        self._failed = None
        if old is not None:
            self.reloads += 1
        if self.observer is not None:
            self.observer.model_loads.labels("ok").inc()
            self.observer.model_load_seconds.observe(model.load_seconds)
            self.observer.model_swapped(old, model)
        log.info(
            "serving %s version %s (was %s), loaded in %.1f s",
            model.name,
            model.version,
            old.version if old else "none",
            model.load_seconds,
        )
        if old is not None:
            # the old model is garbage once the requests using it finish; it was frozen with
            # the heap: unfreeze, collect, freeze again (in the loader thread, once per reload)
            del old
            await asyncio.sleep(1.0)
            await loop.run_in_executor(self._executor, _refreeze)
        return True

    def _recently_failed(self, version: str) -> bool:
        failed = self._failed
        return (
            failed is not None
            and failed[0] == version
            and time.monotonic() - failed[1] < self.retry_max_s
        )

    def _load(self, ref: Ref) -> LoadedModel:
        model = self.source.load(ref)
        model.predictor.warm_up()
        # The model's objects live as long as it serves: keep them out of the cyclic garbage
        # collector's full passes (which otherwise walk them again and again: latency spikes).
        gc.collect()
        gc.freeze()
        return model

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _refreeze() -> None:
    gc.unfreeze()
    gc.collect()
    gc.freeze()


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop``; True when stopped."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
        return True
    except TimeoutError:
        return False
