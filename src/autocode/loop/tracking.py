"""The MLflow side of the loop: the tracking URI, a quick reachability check (MLflow's client
retries a dead server for minutes), and the gold rows a registered version was trained on."""

from __future__ import annotations

import os
from typing import Any

from autocode.errors import UserError

GOLD_RECORD = "gold/gold.json"  # the run artifact listing a version's gold rows
TAG_PREFIX = "gold."


class TrackingError(UserError, RuntimeError):
    """MLflow cannot be used (no URI, unreachable, refused); nothing was changed."""


def tracking_uri(given: str | None = None) -> str:
    uri = given or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise TrackingError("no MLflow tracking URI: set --tracking-uri or MLFLOW_TRACKING_URI")
    return uri


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail at once, with the URI in the message, when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import httpx

    try:
        response = httpx.get(f"{uri.rstrip('/')}/health", timeout=timeout)
    except httpx.HTTPError as exc:
        raise TrackingError(
            f"MLflow is not reachable at {uri}: {exc}; nothing was changed"
        ) from None
    if response.status_code >= 500:
        raise TrackingError(f"MLflow at {uri} answers {response.status_code}; nothing was changed")


def client(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def trained_keys(mlflow_client, run_id: str | None) -> set[str] | None:
    """The gold keys a run was trained on (its `GOLD_RECORD`); None when the run records none
    (a model not trained by `autocode retrain`: no gold row is known to have been trained on)."""
    record = gold_record(mlflow_client, run_id)
    return None if record is None else set(record.get("trained_keys", []))


def gold_record(mlflow_client, run_id: str | None) -> dict[str, Any] | None:
    import json
    import tempfile

    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        listed = {a.path for a in mlflow_client.list_artifacts(run_id, GOLD_RECORD.split("/")[0])}
    except MlflowException:
        return None
    if GOLD_RECORD not in listed:
        return None
    with tempfile.TemporaryDirectory(prefix="autocode-gold-") as tmp:
        try:
            path = mlflow_client.download_artifacts(run_id, GOLD_RECORD, tmp)
        except (MlflowException, OSError):
            return None
        with open(path) as handle:
            return json.load(handle)
