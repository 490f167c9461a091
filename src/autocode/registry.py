"""Model registry operations: move an alias (``champion``) to a version (the ``challenger``)."""

from __future__ import annotations


class PromotionRefused(Exception):
    """The promotion was not done; the message says why."""


def promote_alias(
    tracking_uri: str,
    name: str,
    alias: str = "champion",
    version: str | None = None,
    source_alias: str = "challenger",
    if_better: str | None = None,
) -> str:
    """Point ``alias`` at ``version`` (default: the version behind ``source_alias``).

    With ``if_better``, the run metric of that name must be higher for the candidate than for
    the version currently holding ``alias`` (a missing holder counts as beaten).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        candidate = (
            client.get_model_version(name, version)
            if version
            else client.get_model_version_by_alias(name, source_alias)
        )
    except MlflowException as exc:
        which = f"version {version}" if version else f"alias @{source_alias}"
        raise PromotionRefused(f"model {name!r} has no {which}: {exc.message}") from exc
    if if_better:
        try:
            holder = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            holder = None
        if holder is not None and holder.version != candidate.version:
            new = _metric(client, candidate.run_id, if_better)
            old = _metric(client, holder.run_id, if_better)
            if new is None:
                raise PromotionRefused(f"version {candidate.version} has no metric {if_better!r}")
            if old is not None and new <= old:
                raise PromotionRefused(
                    f"version {candidate.version} {if_better}={new:.4f} does not beat "
                    f"@{alias} (version {holder.version}) {if_better}={old:.4f}"
                )
    client.set_registered_model_alias(name, alias, candidate.version)
    return f"{name} version {candidate.version} is now @{alias}"


def _metric(client, run_id: str | None, key: str) -> float | None:
    if not run_id:
        return None
    return client.get_run(run_id).data.metrics.get(key)
