"""``autocode loop run``: the loop as one command, step by step: ``campaign`` (draw a sample
of the logged traffic and create the Label Studio project), ``wait`` (until every task is
annotated or skipped), ``export`` (a new gold version in ``<gold>/<project>/``), ``retrain``
(the challenger on the cold start and all gold) and ``promote`` (compare and promote when the
rule says so). ``steps`` runs a part (the Argo template runs each step in its own pod with
the same options). Any failure stops the loop before the next step: the champion moves only
in ``promote``, after the comparison is recorded."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autocode.errors import UserError
from autocode.train import NOMENCLATURES, TrainConfig

STEPS = ("campaign", "wait", "export", "retrain", "promote")


class LoopError(UserError, RuntimeError):
    """A step of the loop could not be done; the message says which and what to do."""


class NotComplete(LoopError):
    """The campaign is not annotated yet (``wait`` with no time left)."""


@dataclass
class LoopSettings:
    name: str  # registered model
    project: str  # Label Studio project title
    gold: str  # the folder of all gold (local or s3://); this campaign exports below it
    config: TrainConfig = field(default_factory=TrainConfig)
    data: str | None = None  # compacted prediction logs
    window: str = "last:7d"
    size: int = 200
    seed: int = 0
    uncertainty_share: float = 0.5
    double_share: float = 0.0
    wait_timeout_s: float = 0.0  # 0: check once
    poll_s: float = 30.0
    holdout: float = 0.2
    holdout_seed: int = 0
    rule: str = "not-worse"
    alpha: float = 0.05
    min_rows: int = 30
    target_accuracy: float = 0.9
    label_studio_url: str | None = None
    label_studio_key: str | None = None
    steps: Sequence[str] = STEPS


def campaign_folder(gold: str, project: str) -> str:
    """Where a campaign's gold versions go: ``<gold>/<project as a file name>``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", project).strip("-") or "campaign"
    return f"{gold.rstrip('/')}/{slug}"


def run_loop(
    settings: LoopSettings, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run ``settings.steps`` in the loop's order; returns what each step reported."""
    step = progress or (lambda message: None)
    unknown = [s for s in settings.steps if s not in STEPS]
    if unknown or not settings.steps:
        raise LoopError(f"steps {unknown or '(none)'}: choose among {', '.join(STEPS)}")
    report: dict[str, Any] = {}
    for name in STEPS:
        if name in settings.steps:
            step(f"— {name}")
            report[name] = _STEP[name](settings, step)
    return report


def _client(settings: LoopSettings):
    from autocode.annotate.labelstudio import LabelStudio

    return LabelStudio.from_env(settings.label_studio_url, settings.label_studio_key)


def _label_studio(call):
    """Label Studio down: one line naming it (the champion is untouched)."""
    from autocode.annotate.labelstudio import LabelStudioUnavailable

    try:
        return call()
    except LabelStudioUnavailable as exc:
        raise LoopError(f"{exc}; the loop stopped, the champion is unchanged") from None


def _full_nomenclature(config: TrainConfig):
    from autocode.nomenclature import nomenclature_folder

    return NOMENCLATURES[config.nomenclature][0](nomenclature_folder(config.nomenclatures_folder))


def _campaign(settings: LoopSettings, step) -> dict[str, Any]:
    from autocode.annotate.campaign import sample_campaign
    from autocode.annotate.labelstudio import create_campaign
    from autocode.loop.gold import gold_keys
    from autocode.monitor.query import Dataset, Window

    if not settings.data:
        raise LoopError("the campaign step needs the prediction logs (--data)")
    done = gold_keys([settings.gold], none_yet=True)  # none yet: the first campaign
    step(f"drawing {settings.size} descriptions of {settings.window} ({len(done)} annotated)")
    campaign = sample_campaign(
        Dataset(settings.data),
        Window.parse(settings.window),
        settings.size,
        settings.seed,
        annotated=done,
        uncertainty_share=settings.uncertainty_share,
    )
    nomenclature = _full_nomenclature(settings.config)

    def create():
        with _client(settings) as client:
            return create_campaign(
                client,
                campaign.tasks,
                nomenclature,
                settings.project,
                double_share=settings.double_share,
            )

    result = _label_studio(create)
    step(f"project {result.title!r} (#{result.project_id}): {result.added} task(s) added")
    return result.to_dict()


def _wait(settings: LoopSettings, step) -> dict[str, Any]:
    from autocode.annotate.labelstudio import campaign_progress

    deadline = time.monotonic() + max(settings.wait_timeout_s, 0.0)
    while True:

        def check():
            with _client(settings) as client:
                return campaign_progress(client, settings.project)

        progress = _label_studio(check)
        step(f"{progress.done}/{progress.total} task(s) done")
        if progress.complete:
            return progress.to_dict()
        if time.monotonic() + settings.poll_s > deadline:
            raise NotComplete(
                f"campaign {settings.project!r}: {progress.done}/{progress.total} task(s) done; "
                "not complete yet (run the remaining steps when it is: --steps "
                "wait,export,retrain,promote); the champion is unchanged"
            )
        time.sleep(settings.poll_s)


def _export(settings: LoopSettings, step) -> dict[str, Any]:
    from autocode.annotate.labelstudio import export_campaign, write_gold

    nomenclature = _full_nomenclature(settings.config)

    def export():
        with _client(settings) as client:
            return export_campaign(client, settings.project, nomenclature)

    exported = _label_studio(export)
    if exported.gold.empty:
        raise LoopError(
            f"campaign {settings.project!r} has no annotation yet ({exported.pending} "
            "pending): nothing to export"
        )
    folder = campaign_folder(settings.gold, settings.project)
    written = write_gold(exported, folder, project=settings.project)
    step(f"gold written to {written}")
    return {"file": written, **exported.summary()}


def _retrain(settings: LoopSettings, step) -> dict[str, Any]:
    from autocode.loop.retrain import retrain

    result = retrain(
        settings.config,
        [settings.gold],
        settings.name,
        settings.holdout,
        settings.holdout_seed,
        progress=step,
    )
    return {
        "version": result.train.model_version,
        "run_id": result.train.run_id,
        "gold_rows_trained": result.trained_rows,
        "gold_rows_held_out": result.holdout_rows,
    }


def _promote(settings: LoopSettings, step) -> dict[str, Any]:
    from autocode.loop.compare import compare

    decision = compare(
        settings.name,
        [settings.gold],
        uri=settings.config.mlflow.tracking_uri,
        rule=settings.rule,
        alpha=settings.alpha,
        target_accuracy=settings.target_accuracy,
        min_rows=settings.min_rows,
        promote=True,
        progress=step,
    )
    return decision.outcome()


_STEP: dict[str, Callable[[LoopSettings, Callable[[str], None]], dict[str, Any]]] = {
    "campaign": _campaign,
    "wait": _wait,
    "export": _export,
    "retrain": _retrain,
    "promote": _promote,
}
