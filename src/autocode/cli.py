"""``autocode``: build training data, train, tune, evaluate, code files in batch, promote."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from autocode.annotate.cli import annotate_app
from autocode.errors import UserError, reported
from autocode.loop import cli as loop_cli
from autocode.monitor.cli import logs_app, monitor_app
from autocode.serve.cli import app as serve_app

app = typer.Typer(
    help="Code free-text activity descriptions into a hierarchical nomenclature (NAF, NACE).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Training data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(serve_app, name="serve")
app.add_typer(logs_app, name="logs")
app.add_typer(monitor_app, name="monitor")
app.add_typer(annotate_app, name="annotate")
app.add_typer(loop_cli.loop_app, name="loop")
app.command("distill")(loop_cli.distill_command)
app.command("retrain")(loop_cli.retrain_command)
app.command("compare")(loop_cli.compare_command)
console = Console(stderr=True)

NomenclaturesOption = Annotated[
    Path | None,
    typer.Option(
        "--nomenclatures",
        help="Folder of the nomenclature files (default: $AUTOCODE_NOMENCLATURES, then "
        "../shared/data/nomenclatures beside the repository).",
    ),
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Training config (YAML); see docs.")
]


def main() -> None:
    with reported():  # each module's errors derive from UserError
        app()


@contextmanager
def progress_steps(description: str):
    """A spinner line updated by each step message (for work of unknown length)."""
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task(description, total=None)

        def step(message: str) -> None:
            progress.update(task, description=message)
            progress.console.log(message)

        yield step


def _config(config: Path | None, nomenclatures: Path | None, **overrides):
    from autocode.train import TrainConfig

    train_config = TrainConfig.from_yaml(config) if config else TrainConfig()
    if nomenclatures is not None:
        train_config.nomenclatures_folder = str(nomenclatures)
    for key, value in overrides.items():
        if value is not None:
            setattr(train_config, key, value)
    return train_config


def _metrics_table(metrics: dict[str, float], title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


# -- data -----------------------------------------------------------------------------------------
@data_app.command("build-cold-start")
def build_cold_start_command(
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="Where to write the table (.csv or .parquet, local or s3://)."
        ),
    ] = "cold_start.csv",
    nomenclatures: NomenclaturesOption = None,
    config: ConfigOption = None,
    report: Annotated[
        Path | None, typer.Option(help="Also write the rows-per-code report (CSV) here.")
    ] = None,
) -> None:
    """Build the cold-start training set from the nomenclature's labels and notes."""
    from autocode import data as datamod
    from autocode.train import load_inputs

    train_config = _config(config, nomenclatures, train=[], evaluation=[])
    train_config.cold_start = True
    inputs = load_inputs(train_config)
    datamod.write_table(inputs.table, output)
    per_code = datamod.rows_per_code(inputs.table, inputs.nomenclature)
    if report:
        per_code.to_csv(report)
    console.print(f"{len(inputs.table)} rows for {len(per_code)} codes written to {output}")
    counts = inputs.table[datamod.SOURCE].value_counts()
    console.print(_metrics_table({k: int(v) for k, v in counts.items()}, "rows per source"))
    console.print(
        f"rows per code: min {per_code['rows'].min()}, median {per_code['rows'].median():.0f}, "
        f"max {per_code['rows'].max()}; fewest: "
        + ", ".join(f"{c} ({n})" for c, n in per_code["rows"].head(5).items())
    )


# -- train ----------------------------------------------------------------------------------------
@app.command()
def train(
    config: ConfigOption = None,
    nomenclatures: NomenclaturesOption = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Local model directory to write.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model kind: fasttext, tfidf, e5 or ensemble.")
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI; none: no run)."),
    ] = None,
    registered_model: Annotated[
        str | None, typer.Option(help="Register the model under this name.")
    ] = None,
) -> None:
    """Train a coder. With no config: the cold-start model of NAF rév. 2 from the notes."""
    from autocode.train import train as run_training

    train_config = _config(config, nomenclatures, output=output, model=model)
    if tracking_uri:
        train_config.mlflow.tracking_uri = tracking_uri
    if registered_model:
        train_config.mlflow.registered_model = registered_model
    with progress_steps("training") as step:
        result = run_training(train_config, progress=step)
    console.print(_metrics_table(result.metrics, "metrics"))
    console.print(f"model written to {result.output}")
    if result.run_id:
        console.print(f"MLflow run {result.run_id}, model {result.model_uri}")
    if result.model_version:
        name, alias = train_config.mlflow.registered_model, train_config.mlflow.alias
        console.print(f"registered {name} version {result.model_version} as @{alias}")


# -- tune -----------------------------------------------------------------------------------------
@app.command()
def tune(
    space: Annotated[Path, typer.Option("--space", "-s", help="Search space (YAML).")],
    config: ConfigOption = None,
    nomenclatures: NomenclaturesOption = None,
    backend: Annotated[
        str, typer.Option(help="local (process pool) or argo (write a workflow manifest).")
    ] = "local",
    workers: Annotated[int, typer.Option(help="Parallel trainings (local backend).")] = 2,
    manifest: Annotated[
        Path, typer.Option(help="Where the argo backend writes the workflow (YAML).")
    ] = Path("autocode-tune-workflow.yaml"),
    image: Annotated[
        str, typer.Option(help="Container image of the argo training steps.")
    ] = "autocode:latest",
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI).")
    ] = None,
    best_config: Annotated[
        Path | None,
        typer.Option(help="Write the training config of the best trial here (YAML)."),
    ] = None,
) -> None:
    """Search hyper-parameters: trials in parallel, best on validation (never on a test set)."""
    from autocode.tune import SearchSpace, argo_workflow, run_local

    search = SearchSpace.from_yaml(space)
    train_config = _config(config, nomenclatures)
    if tracking_uri:
        train_config.mlflow.tracking_uri = tracking_uri
    if backend == "argo":
        workflow = argo_workflow(search, train_config, image=image)
        manifest.write_text(workflow.to_yaml())
        console.print(f"Argo workflow with {len(search.trials())} trials written to {manifest}")
        return
    if backend != "local":
        raise UserError(f"--backend {backend!r}: choose local or argo")
    trials = search.trials()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("tuning", total=len(trials))
        outcome = run_local(
            search, train_config, workers=workers, on_trial=lambda _: progress.advance(task)
        )
    table = Table(title=f"trials (objective: {search.objective})")
    table.add_column("trial")
    table.add_column("params")
    table.add_column(search.objective, justify="right")
    for trial in outcome.trials:
        table.add_row(str(trial.index), json.dumps(trial.params), f"{trial.score:.4f}")
    console.print(table)
    console.print(f"best: trial {outcome.best.index} {json.dumps(outcome.best.params)}")
    if best_config:
        import yaml

        best_config.write_text(yaml.safe_dump(outcome.best_config.to_dict(), sort_keys=False))
        console.print(f"best config written to {best_config}")
    if outcome.parent_run_id:
        console.print(f"MLflow parent run {outcome.parent_run_id}")


# -- evaluate -------------------------------------------------------------------------------------
@app.command()
def evaluate(
    model: Annotated[
        str | None,
        typer.Option(help="Model: local directory, models:/name@alias or runs:/id/model."),
    ] = None,
    input: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="Labelled CSV/Parquet (repeatable).")
    ] = None,
    text_column: Annotated[str, typer.Option(help="Text column of the input.")] = (
        "text_description"
    ),
    code_column: Annotated[str, typer.Option(help="Code column of the input.")] = "code",
    figures: Annotated[
        Path | None, typer.Option(help="Write the PNG figures and per-code CSV here.")
    ] = None,
    cv: Annotated[
        int,
        typer.Option(
            help="Instead: K-fold cross-validation of the config: of its train datasets' rows "
            "(descriptions; cold-start rows always trained on) or, without them, of the notes."
        ),
    ] = 0,
    seeds: Annotated[
        str | None,
        typer.Option(help="With --cv: comma-separated seeds, one cross-validation each."),
    ] = None,
    config: ConfigOption = None,
    nomenclatures: NomenclaturesOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
    combined: Annotated[
        bool,
        typer.Option(
            help="Also evaluate all inputs together ('combined') and their distinct texts only "
            "('combined_distinct': a text already seen is dropped)."
        ),
    ] = False,
    weight_column: Annotated[
        str,
        typer.Option(
            help="Sampling weight column: an input that has it (an annotation campaign's gold) "
            "is evaluated as a sample of the traffic, each share with its design-based interval."
        ),
    ] = "weight",
    stratum_column: Annotated[
        str, typer.Option(help="Stratum column of a weighted input (absent: one stratum).")
    ] = "stratum",
    inclusion_column: Annotated[
        str,
        typer.Option(
            help="Inclusion probability column of a weighted input (rows at 1 have no sampling "
            "variance; absent: every row sampled)."
        ),
    ] = "inclusion_probability",
) -> None:
    """Evaluate a model on labelled files, or cross-validate a training config (--cv K).

    Every share comes with its 95 % interval (Wilson; bootstrap for the coverage at a target
    accuracy); `auto_accuracy` is the achieved accuracy of the model's own automatic decision.
    An input with a weight column is a sample: shares are weighted estimates for the traffic
    it was drawn from, intervals design-based (see docs/autocode.md, "Annotation campaigns")."""
    from autocode import data as datamod
    from autocode.evaluate import evaluate_predictions
    from autocode.model import load_coder
    from autocode.train import cross_validate, evaluate_coder

    results: dict[str, Mapping[str, float | str]] = {}  # the cv rows_folded is a word
    if cv:
        train_config = _config(config, nomenclatures)
        seed_list = _seeds(seeds) if seeds else None
        with progress_steps("cross-validation") as step:
            outcome = cross_validate(train_config, cv, progress=step, seeds=seed_list)
        results[f"cv{cv}"] = {**outcome.metrics(), "rows_folded": outcome.rows}
        if len(outcome.evaluations) > 1:
            for seed, evaluation in outcome.evaluations.items():
                results[f"cv{cv}_seed{seed}"] = evaluation.metrics
        if figures:
            for seed, evaluation in outcome.evaluations.items():
                write_figures_for(evaluation, figures / f"cv{cv}_seed{seed}", f"cv{cv} seed {seed}")
    else:
        if not model or not input:
            raise UserError("give --model and at least one --input (or --cv K)")
        if seeds:
            raise UserError("--seeds goes with --cv")
        coder = load_coder(model)
        sets = {}
        designs = {}
        for uri in input:
            table = datamod.read_table(uri)
            # categorical inputs the file does not have count as missing values (as in predict)
            present = [c for c in coder.categorical if c in table]
            labelled = datamod.label_table(
                table, coder.nomenclature, text_column, code_column, present
            )
            if len(labelled.invalid):
                console.print(f"[yellow]{uri}: {labelled.report()}[/yellow]")
            sets[Path(uri).stem] = labelled.rows
            if weight_column in table:
                kept = table.drop(index=labelled.invalid.index)
                designs[Path(uri).stem] = _design(
                    kept, uri, weight_column, stratum_column, inclusion_column
                )
        if combined and designs:
            raise UserError(
                f"--combined cannot pool weighted samples ({', '.join(designs)}) with other "
                "rows: evaluate weighted inputs separately"
            )
        if combined:
            import pandas as pd

            everything = pd.concat(list(sets.values()), ignore_index=True)
            sets["combined"] = everything
            sets["combined_distinct"] = everything.drop_duplicates(datamod.TEXT)
        for name, rows in sets.items():
            if name in designs:
                predictions = coder.predict(rows, k=max(5, coder.k))
                evaluation = evaluate_predictions(
                    predictions, rows[datamod.CODE].tolist(), coder.nomenclature, designs[name]
                )
            else:
                evaluation = evaluate_coder(coder, rows)
            results[name] = evaluation.metrics
            if figures:
                write_figures_for(evaluation, figures / name, name)
    if json_output:
        print(json.dumps(results, indent=2))
        return
    for name, metrics in results.items():
        console.print(_evaluation_table(metrics, name))


def _design(table, uri: str, weight: str, stratum: str, inclusion: str):
    """The sample design of a weighted input's valid rows."""
    from autocode.evaluate import SampleDesign

    if table.empty:
        raise UserError(f"{uri}: no valid row to evaluate")
    try:
        return SampleDesign.of(
            table[weight].astype(float),
            table[stratum].astype(str) if stratum in table else None,
            table[inclusion].astype(float) if inclusion in table else None,
        )
    except (TypeError, ValueError) as exc:
        raise UserError(f"{uri}: {exc} (columns {weight!r}, {inclusion!r})") from None


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise UserError("--seeds: give at least one seed")
    return seeds


def _evaluation_table(metrics: Mapping[str, float | str], title: str) -> Table:
    """Metrics with their 95 % interval in a third column (``<m>_low``, ``<m>_high``)."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95 % interval", justify="right")
    for key, value in metrics.items():
        if key.endswith(("_low", "_high")) and key.rsplit("_", 1)[0] in metrics:
            continue
        low, high = metrics.get(f"{key}_low"), metrics.get(f"{key}_high")
        interval = f"{low:.3f} – {high:.3f}" if isinstance(low, float) and high is not None else ""
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        table.add_row(key, shown, interval)
    return table


def write_figures_for(evaluation, directory: Path, name: str) -> None:
    from autocode.evaluate import write_figures

    paths = write_figures(evaluation, directory, f"({name})")
    evaluation.per_code.to_csv(directory / "per_code.csv", index=False)
    console.print(f"figures: {', '.join(str(p) for p in paths)}")


# -- predict --------------------------------------------------------------------------------------
@app.command()
def predict(
    model: Annotated[
        str, typer.Option(help="Model: local directory, models:/name@alias or runs:/id/model.")
    ],
    input: Annotated[str, typer.Option("--input", "-i", help="CSV or Parquet, local or s3://.")],
    output: Annotated[str, typer.Option("--output", "-o", help="CSV or Parquet, local or s3://.")],
    text_column: Annotated[
        str | None, typer.Option(help="Text column (default: text or text_description).")
    ] = None,
    k: Annotated[int, typer.Option(help="Number of codes per row.")] = 5,
    threshold: Annotated[
        float | None, typer.Option(help="IC threshold of automatic coding (default: model's).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per batch.")] = 10000,
) -> None:
    """Code a whole file: adds the top-k codes, probabilities, labels, IC and `auto` columns."""
    import pandas as pd

    from autocode import data as datamod
    from autocode.model import load_coder

    coder = load_coder(model)
    table = datamod.read_table(input)
    column = text_column or next(
        (c for c in ("text", "text_description") if c in table.columns), None
    )
    if column is None or column not in table.columns:
        raise UserError(f"text column {column!r} not in {input}: {list(table.columns)}")
    frame = table.rename(columns={column: "text"}) if column != "text" else table
    parts = []
    with Progress(
        TextColumn("coding"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} rows"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("coding", total=len(frame))
        for start in range(0, len(frame), batch_size):
            batch = frame.iloc[start : start + batch_size]
            parts.append(coder.predict(batch, k=k, threshold=threshold))
            progress.advance(task, len(batch))
    coded = pd.concat(parts, ignore_index=True) if parts else coder.predict(frame.head(0), k)
    overlap = [c for c in coded.columns if c in table.columns]
    result = pd.concat(
        [table.reset_index(drop=True), coded.rename(columns={c: f"pred_{c}" for c in overlap})],
        axis=1,
    )
    datamod.write_table(result, output)
    auto = float(coded["auto"].mean()) if len(coded) else 0.0
    console.print(f"{len(result)} rows coded to {output}; {auto:.1%} coded automatically")


# -- promote --------------------------------------------------------------------------------------
@app.command()
def promote(
    name: Annotated[str, typer.Option(help="Registered model name.")],
    version: Annotated[
        str | None, typer.Option(help="Version to promote (default: the --source alias).")
    ] = None,
    source: Annotated[str, typer.Option(help="Alias promoted from.")] = "challenger",
    alias: Annotated[str, typer.Option(help="Alias to set.")] = "champion",
    if_better: Annotated[
        str | None,
        typer.Option(help="Only if this run metric is higher than the current holder's."),
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI).")
    ] = None,
    gold: Annotated[
        list[str] | None,
        typer.Option(
            "--gold",
            help="Instead of --if-better: compare @challenger with @champion on these gold "
            "files' rows neither was trained on and promote when --rule says so (`autocode "
            "compare`; exit 1 when the champion is kept).",
        ),
    ] = None,
    rule: loop_cli.RuleOption = "not-worse",
    alpha: loop_cli.AlphaOption = 0.05,
    min_rows: loop_cli.MinRowsOption = 30,
    target_accuracy: loop_cli.TargetOption = 0.9,
    json_output: Annotated[bool, typer.Option("--json", help="With --gold: JSON.")] = False,
    fail_on_keep: loop_cli.FailOnKeepOption = True,
) -> None:
    """Move an alias (champion) to a version (the challenger by default); with --gold, only
    when the challenger is not worse on gold rows (docs/loop.md)."""
    from autocode.registry import PromotionRefused, promote_alias

    if gold:
        if version or if_better or source != "challenger" or alias != "champion":
            raise UserError("--gold compares @challenger with @champion: no --version, "
                            "--if-better, --source or --alias with it")  # fmt: skip
        loop_cli.promote_on_gold(
            name,
            gold,
            rule,
            alpha,
            min_rows,
            target_accuracy,
            tracking_uri,
            json_output,
            fail_on_keep,
        )
        return
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise UserError("set --tracking-uri or MLFLOW_TRACKING_URI")
    try:
        outcome = promote_alias(
            uri, name, alias, version=version, source_alias=source, if_better=if_better
        )
    except PromotionRefused as exc:
        raise UserError(str(exc)) from exc
    console.print(outcome)


if __name__ == "__main__":
    main()
