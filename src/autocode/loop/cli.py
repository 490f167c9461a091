"""The loop's commands: ``autocode retrain``, ``autocode compare`` (and ``autocode promote
--gold``, which uses it), ``autocode loop argo``."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from autocode.monitor.cli import DataOption, VersionsOption

console = Console(stderr=True)
loop_app = typer.Typer(help="The closed loop: campaign → gold → retrain → compare → promote.",
                       no_args_is_help=True)  # fmt: skip

GoldOption = Annotated[
    list[str],
    typer.Option(
        "--gold",
        "-g",
        help="Gold standard: Parquet files of `autocode annotate export`, or folders / s3:// "
        "prefixes of them (repeatable).",
    ),
]
TrackingOption = Annotated[
    str | None, typer.Option(help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI).")
]
RuleOption = Annotated[
    str,
    typer.Option(
        help="not-worse: promote unless the challenger is shown worse; better: only when it is "
        "shown more accurate (McNemar) and not shown to code fewer rows automatically."
    ),
]
AlphaOption = Annotated[float, typer.Option(help="Level of the one-sided tests.")]
MinRowsOption = Annotated[
    int, typer.Option(help="Fewest gold rows neither model was trained on to compare.")
]
FailOnKeepOption = Annotated[
    bool,
    typer.Option(
        help="Exit 1 when the champion is kept (--no-fail-on-keep: exit 0, as a workflow step "
        "whose refusal is an outcome, not a failure)."
    ),
]
TargetOption = Annotated[
    float, typer.Option(help="Target accuracy of the automatic-coding rate (business metric).")
]


def _step(message: str) -> None:
    console.log(message)


def retrain_command(
    name: Annotated[str, typer.Option(help="Registered model name.")],
    gold: GoldOption,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Training config (YAML).")
    ] = None,
    nomenclatures: Annotated[
        Path | None, typer.Option(help="Folder of the nomenclature files.")
    ] = None,
    holdout: Annotated[
        float, typer.Option(help="Share of gold descriptions held out (never trained on).")
    ] = 0.2,
    holdout_seed: Annotated[int, typer.Option(help="Seed of the hold-out.")] = 0,
    alias: Annotated[str, typer.Option(help="Alias given to the new version.")] = "challenger",
    output: Annotated[str | None, typer.Option("--output", "-o", help="Local model dir.")] = None,
    tracking_uri: TrackingOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train a challenger on the cold start and all gold so far (minus a seeded hold-out),
    register it as @challenger with the gold it was trained on. @champion does not move."""
    from autocode.loop.retrain import retrain
    from autocode.train import TrainConfig

    train_config = TrainConfig.from_yaml(config) if config else TrainConfig()
    if nomenclatures is not None:
        train_config.nomenclatures_folder = str(nomenclatures)
    if output:
        train_config.output = output
    if tracking_uri:
        train_config.mlflow.tracking_uri = tracking_uri
    with contextlib.redirect_stdout(sys.stderr):  # MLflow prints its runs' links on stdout
        result = retrain(train_config, gold, name, holdout, holdout_seed, alias, progress=_step)
    summary = {
        "model": name,
        "version": result.train.model_version,
        "alias": result.alias,
        "run_id": result.train.run_id,
        "gold_rows_trained": result.trained_rows,
        "gold_rows_held_out": result.holdout_rows,
        "left_out": result.gold.left_out,
        "metrics": {k: v for k, v in result.train.metrics.items() if k.startswith("gold_holdout_")},
    }
    if json_output:
        print(json.dumps(summary, indent=2))
        return
    console.print(
        f"{name} version {summary['version']} is @{alias}: trained on "
        f"{result.trained_rows} gold rows, {result.holdout_rows} held out"
    )


def distill_command(
    data: DataOption,
    window: Annotated[
        str,
        typer.Option(
            "--window",
            "-w",
            help="The traffic coded: START..END (end excluded; dates or ISO times), last:30d.",
        ),
    ],
    teacher: Annotated[
        str,
        typer.Option(
            help="The model that codes: a local directory, models:/name@alias or runs:/id/model "
            "(typically the e5 ensemble)."
        ),
    ],
    output: Annotated[
        str,
        typer.Option("--output", "-o", help="The coded rows: .parquet or .csv, local or s3://."),
    ],
    size: Annotated[
        int | None,
        typer.Option(
            "--size", "-n", help="Code this many descriptions, drawn at random (default: all)."
        ),
    ] = None,
    gold: Annotated[
        list[str] | None,
        typer.Option(
            "--gold",
            "-g",
            help="Gold standard (files, folders or s3:// prefixes, repeatable): its descriptions "
            "are left out.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --size draw.")] = 0,
    model_version: VersionsOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """A teacher model codes the distinct descriptions of a window of the prediction log, for a
    fast cold-start model to be trained on them (a train dataset with labels: model); nothing it
    codes is automatic until experts' codes calibrate it."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from autocode import data as datamod
    from autocode.loop.distill import distill
    from autocode.loop.gold import gold_keys
    from autocode.model import load_coder
    from autocode.monitor.query import Dataset, Window

    done = gold_keys(gold) if gold else set()
    parsed = Window.parse(window)
    coder = load_coder(teacher)
    with Progress(
        TextColumn("teacher coding"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} descriptions"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("coding", total=None)

        def advance(completed: int, total: int) -> None:
            bar.update(task, completed=completed, total=total)

        distilled = distill(
            Dataset(data),
            parsed,
            coder,
            gold_keys=done,
            size=size,
            seed=seed,
            model_versions=model_version or (),
            progress=advance,
        )
    datamod.write_table(distilled.rows, output)
    summary = {"teacher": teacher, "output": output, **distilled.summary()}
    if json_output:
        print(json.dumps(summary, indent=2))
        return
    console.print(
        f"{summary['rows']} descriptions coded by {teacher} to {output} ({summary['codes']} "
        f"codes, mean IC {summary['mean_teacher_ic']}); {distilled.in_gold} already in the gold "
        f"left out, of {distilled.descriptions} distinct descriptions in {distilled.predictions} "
        "predictions"
    )


def compare_command(
    name: Annotated[str, typer.Option(help="Registered model name.")],
    gold: GoldOption,
    rule: RuleOption = "not-worse",
    alpha: AlphaOption = 0.05,
    min_rows: MinRowsOption = 30,
    target_accuracy: TargetOption = 0.9,
    tracking_uri: TrackingOption = None,
    promote: Annotated[
        bool, typer.Option(help="Move @champion to the challenger when the rule says so.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the decision as JSON.")
    ] = False,
    fail_on_keep: FailOnKeepOption = True,
) -> None:
    """Compare @challenger with @champion on gold rows neither was trained on (McNemar, the
    automatic-coding rate at the target accuracy, accuracies with intervals) and record the
    decision in MLflow (experiment <name>-promotions). Exit code 0 promote, 1 keep."""
    decision = run_compare(
        name, gold, rule, alpha, min_rows, target_accuracy, tracking_uri, promote
    )
    _report(decision, json_output)
    if fail_on_keep and not decision.promote:
        raise typer.Exit(1)


def run_compare(name, gold, rule, alpha, min_rows, target_accuracy, tracking_uri, promote):
    from autocode.loop.compare import compare

    with contextlib.redirect_stdout(sys.stderr):  # MLflow prints its runs' links on stdout
        return compare(
            name,
            gold,
            uri=tracking_uri,
            rule=rule,
            alpha=alpha,
            target_accuracy=target_accuracy,
            min_rows=min_rows,
            promote=promote,
            progress=_step,
        )


def _report(decision, json_output: bool) -> None:
    if json_output:
        shown = {k: v for k, v in decision.evidence.items() if k != "compared_keys"}
        print(
            json.dumps(
                {**decision.outcome(), **shown},
                indent=2,
                default=str,
            )
        )
        return
    evidence = decision.evidence
    if "mcnemar" in evidence:
        test, acc, auto = evidence["mcnemar"], evidence["accuracy"], evidence["automatic_coding"]
        a, b = evidence["champion_metrics"], evidence["challenger_metrics"]
        console.print(f"{evidence['rows_compared']} gold rows neither model was trained on")
        for role, m in (("champion", a), ("challenger", b)):
            console.print(
                f"  {role:<10} accuracy {m['accuracy']:.3f} "
                f"[{m['accuracy_low']:.3f}, {m['accuracy_high']:.3f}]"
            )
        console.print(
            f"  difference {acc['delta_accuracy']:+.3f} "
            f"[{acc['delta_accuracy_low']:+.3f}, {acc['delta_accuracy_high']:+.3f}]; McNemar "
            f"n10={test['n10']} n01={test['n01']} p={test['p_two_sided']:.4f}"
        )
        console.print(
            f"  automatic-coding rate at the target: {auto['coverage_champion']:.3f} → "
            f"{auto['coverage_challenger']:.3f} (difference "
            f"[{auto['delta_coverage_low']:+.3f}, {auto['delta_coverage_high']:+.3f}])"
        )
    console.print(decision.summary())
    if decision.promoted:
        console.print(f"{decision.model} version {decision.challenger} is now @champion")
    if decision.run_id:
        console.print(f"evidence: MLflow run {decision.run_id} ({decision.model}-promotions)")


def promote_on_gold(
    name, gold, rule, alpha, min_rows, target_accuracy, tracking_uri, json_output, fail_on_keep
):
    """`autocode promote --gold`: compare, and promote when the rule says so (exit 1: kept)."""
    decision = run_compare(name, gold, rule, alpha, min_rows, target_accuracy, tracking_uri, True)
    _report(decision, json_output)
    if fail_on_keep and not decision.promote:
        raise typer.Exit(1)


@loop_app.command("argo")
def argo_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder of the YAML files.")],
    image: Annotated[str, typer.Option(help="The training image.")] = "autocode-train:latest",
    namespace: Annotated[str | None, typer.Option(help="Namespace of the templates.")] = None,
    model: Annotated[str, typer.Option(help="Registered model name.")] = "autocode-naf",
    tracking_uri: Annotated[
        str, typer.Option(help="MLflow tracking URI seen from the pods.")
    ] = "http://mlflow:5000",
    label_studio_url: Annotated[
        str, typer.Option(help="Label Studio seen from the pods.")
    ] = "http://label-studio:8080",
    s3_endpoint: Annotated[
        str | None, typer.Option(help="S3 endpoint seen from the pods (default: AWS).")
    ] = None,
    s3_secret: Annotated[
        str, typer.Option(help="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.")
    ] = "autocode-s3",  # noqa: S107 (a Secret's name)
    label_studio_secret: Annotated[
        str, typer.Option(help="Secret with LABEL_STUDIO_API_KEY.")
    ] = "autocode-label-studio",  # noqa: S107 (a Secret's name)
    nomenclatures_claim: Annotated[
        str, typer.Option(help="PersistentVolumeClaim holding the nomenclature files.")
    ] = "autocode-nomenclatures",
    service_account: Annotated[
        str | None, typer.Option(help="Service account of the workflows' pods.")
    ] = None,
    schedule: Annotated[str, typer.Option(help="Cron schedule of the loop.")] = "0 3 * * 1",
    timezone: Annotated[str, typer.Option(help="Time zone of the schedule.")] = "Europe/Paris",
) -> None:
    """Write the Argo Workflows templates (train, tune, loop) and the loop's CronWorkflow,
    generated with hera and validated against Argo's schema: `kubectl apply -f DIR`."""
    from autocode.loop.argo import ArgoSettings, write

    settings = ArgoSettings(
        image=image,
        namespace=namespace,
        model=model,
        tracking_uri=tracking_uri,
        s3_secret=s3_secret,
        label_studio_secret=label_studio_secret,
        label_studio_url=label_studio_url,
        nomenclatures_claim=nomenclatures_claim,
        service_account=service_account,
        schedule=schedule,
        timezone=timezone,
        s3_endpoint=s3_endpoint,
    )
    for path in write(settings, output):
        console.print(f"wrote {path}")


@loop_app.command("run")
def run_command(
    name: Annotated[str, typer.Option(help="Registered model name.")],
    project: Annotated[str, typer.Option("--project", "-p", help="Label Studio project title.")],
    gold: Annotated[
        str,
        typer.Option(
            "--gold",
            "-g",
            help="Folder of all gold (local or s3://): this campaign exports into "
            "<gold>/<project>/, retraining and comparison read all of it.",
        ),
    ],
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="Compacted prediction logs (campaign).")
    ] = None,
    window: Annotated[str, typer.Option("--window", "-w", help="Traffic sampled.")] = "last:7d",
    size: Annotated[int, typer.Option("--size", "-n", help="Descriptions to annotate.")] = 200,
    steps: Annotated[
        str, typer.Option(help="Comma-separated steps to run, in the loop's order.")
    ] = "campaign,wait,export,retrain,promote",
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Training config (YAML).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the campaign's draw.")] = 0,
    uncertainty_share: Annotated[
        float, typer.Option(help="Share of the sample allocated by uncertainty.")
    ] = 0.5,
    double_share: Annotated[float, typer.Option(help="Share of tasks annotated twice.")] = 0.0,
    wait_timeout: Annotated[
        float,
        typer.Option(help="Seconds to wait for the campaign's completion (0: check once)."),
    ] = 0.0,
    poll: Annotated[float, typer.Option(help="Seconds between two progress checks.")] = 30.0,
    holdout: Annotated[float, typer.Option(help="Share of gold held out (retrain).")] = 0.2,
    holdout_seed: Annotated[int, typer.Option(help="Seed of the hold-out.")] = 0,
    rule: RuleOption = "not-worse",
    alpha: AlphaOption = 0.05,
    min_rows: MinRowsOption = 30,
    target_accuracy: TargetOption = 0.9,
    tracking_uri: TrackingOption = None,
    url: Annotated[
        str | None, typer.Option(help="Label Studio's URL (default: $LABEL_STUDIO_URL).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="Label Studio API token (default: $LABEL_STUDIO_API_KEY).")
    ] = None,
    fail_on_keep: FailOnKeepOption = True,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """The loop in one command: campaign → wait → export → retrain → promote (docs/loop.md).
    Exit 0: done (promoted, or steps without promote); 1: champion kept; 2: an error; 3: the
    campaign is not complete yet."""
    from autocode.loop.run import LoopSettings, NotComplete, run_loop
    from autocode.train import TrainConfig

    train_config = TrainConfig.from_yaml(config) if config else TrainConfig()
    if tracking_uri:
        train_config.mlflow.tracking_uri = tracking_uri
    settings = LoopSettings(
        name=name,
        project=project,
        gold=gold,
        config=train_config,
        data=data,
        window=window,
        size=size,
        seed=seed,
        uncertainty_share=uncertainty_share,
        double_share=double_share,
        wait_timeout_s=wait_timeout,
        poll_s=poll,
        holdout=holdout,
        holdout_seed=holdout_seed,
        rule=rule,
        alpha=alpha,
        min_rows=min_rows,
        target_accuracy=target_accuracy,
        label_studio_url=url,
        label_studio_key=api_key,
        steps=[s.strip() for s in steps.split(",") if s.strip()],
    )
    try:
        with contextlib.redirect_stdout(sys.stderr):  # MLflow prints its runs' links on stdout
            report = run_loop(settings, progress=_step)
    except NotComplete as exc:
        console.print(f"[yellow]{exc}[/yellow]", highlight=False)
        raise typer.Exit(3) from None
    if json_output:
        print(json.dumps(report, indent=2, default=str))
    promote = report.get("promote")
    if promote:
        console.print(
            f"{name}: {promote['decision']} (challenger {promote['challenger']}): "
            f"{promote['reason']}",
            highlight=False,
        )
        if fail_on_keep and promote["decision"] != "promote":
            raise typer.Exit(1)
