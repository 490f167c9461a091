"""``autocode annotate``: annotation campaigns drawn from the prediction log. Errors a user can
cause print one line starting with ``error:`` and exit with code 2 (as the other commands)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from autocode.monitor.cli import DataOption, VersionsOption

if TYPE_CHECKING:
    from autocode.annotate.campaign import Campaign
    from autocode.nomenclature import Nomenclature

annotate_app = typer.Typer(
    help="Annotation campaigns: samples of the logged traffic for experts to code.",
    no_args_is_help=True,
)
console = Console(stderr=True)


def user_errors() -> contextlib.AbstractContextManager[None]:
    """Errors the user can fix (DesignError, DataError, MonitorError...) as one line."""
    from autocode.errors import reported

    return reported()


def _bands(text: str) -> list[float]:
    from autocode.annotate.design import DesignError

    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise DesignError(f"--bands {text!r}: comma-separated ICs, e.g. 0.1,0.3,0.6") from None


def _draw(
    data: str,
    window: str,
    size: int,
    seed: int,
    *,
    gold: list[str] | None,
    gold_text_column: str | None,
    bands: str,
    uncertainty_share: float,
    model_version: list[str] | None,
) -> Campaign:
    """The campaign of ``sample`` and ``create``: descriptions already in a ``gold`` file
    (read with ``gold_text_column``, or guessed when None) are not drawn again."""
    from autocode import data as datamod
    from autocode.annotate.campaign import annotated_keys, sample_campaign
    from autocode.monitor.query import Dataset, Window

    done: set[str] = set()
    for uri in gold or []:
        done |= annotated_keys(datamod.read_table(uri), gold_text_column, uri)
    return sample_campaign(
        Dataset(data),
        Window.parse(window),
        size,
        seed,
        annotated=done,
        bands=_bands(bands),
        uncertainty_share=uncertainty_share,
        model_versions=model_version or (),
    )


@annotate_app.command("sample")
def sample_command(
    data: DataOption,
    window: Annotated[
        str,
        typer.Option(
            "--window",
            "-w",
            help="The traffic sampled: START..END (2026-11-01..2026-11-08, end excluded; or ISO "
            "times), last:7d, last:24h.",
        ),
    ],
    size: Annotated[int, typer.Option("--size", "-n", help="Descriptions to annotate.")],
    output: Annotated[
        str,
        typer.Option("--output", "-o", help="Task file: .parquet or .csv, local or s3://."),
    ],
    gold: Annotated[
        list[str] | None,
        typer.Option(
            "--gold",
            help="Annotated descriptions (CSV/Parquet, repeatable): not drawn again, kept as the "
            "certainty stratum.",
        ),
    ] = None,
    gold_text_column: Annotated[
        str | None,
        typer.Option(help="Text column of the --gold files (default: text, else text_description)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the draw (same logs, same sample).")] = 0,
    uncertainty_share: Annotated[
        float,
        typer.Option(
            help="Share of the sample allocated to the strata by traffic × (1 - IC) rather than "
            "by traffic alone (0: proportional; 1: all towards low ICs)."
        ),
    ] = 0.5,
    bands: Annotated[
        str,
        typer.Option(help="Inner edges of the IC strata, comma-separated."),
    ] = "0.05,0.1,0.2,0.35,0.5,0.75",
    model_version: VersionsOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the design as JSON.")] = False,
) -> None:
    """Draw a campaign: distinct descriptions of the window, stratified by IC with low ICs
    over-sampled, each with its inclusion probability and weight (rows of traffic it stands
    for), so that weighted gold rows estimate the accuracy of the whole traffic."""
    from autocode import data as datamod
    from autocode.annotate.campaign import design_summary

    with user_errors():
        campaign = _draw(
            data,
            window,
            size,
            seed,
            gold=gold,
            gold_text_column=gold_text_column,
            bands=bands,
            uncertainty_share=uncertainty_share,
            model_version=model_version,
        )
        datamod.write_table(campaign.tasks, output)
    summary = design_summary(campaign)
    if json_output:
        print(json.dumps(summary, indent=2))
    else:
        table = Table(title=f"campaign design ({summary['tasks']} tasks)")
        for column in ("stratum", "units", "rows", "mean IC", "sample"):
            table.add_column(column, justify="left" if column == "stratum" else "right")
        for row in summary["strata"]:
            table.add_row(
                row["stratum"],
                str(row["units"]),
                str(row["rows"]),
                f"{row['mean_ic']:.3f}",
                str(row["sample"]),
            )
        console.print(table)
    console.print(
        f"{summary['tasks']} tasks written to {output} ({summary['already_annotated']} already "
        f"annotated kept with weight; {summary['blank_texts']} blank texts of "
        f"{summary['predictions']} predictions left out)"
    )


# -- Label Studio ------------------------------------------------------------------------------
UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="Label Studio's URL (default: $LABEL_STUDIO_URL)."),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help="Label Studio API token (default: $LABEL_STUDIO_API_KEY; the service's notes "
        "show it). Behind datalab's platform, $DATALAB_TOKEN is sent too.",
    ),
]
ProjectOption = Annotated[
    str, typer.Option("--project", "-p", help="Label Studio project: its title (or its id).")
]
NomenclatureOption = Annotated[
    str, typer.Option("--nomenclature", help="naf2008 or naf2025: the codes annotators choose.")
]
NomenclaturesFolderOption = Annotated[
    str | None,
    typer.Option(
        "--nomenclatures",
        help="Folder of the nomenclature files (default: $AUTOCODE_NOMENCLATURES, then "
        "../shared/data/nomenclatures beside the repository).",
    ),
]


@contextlib.contextmanager
def label_studio_errors() -> Iterator[None]:
    """User errors as one line and exit code 2; Label Studio down as one line and exit 1."""
    from autocode.annotate.labelstudio import LabelStudioUnavailable

    with user_errors():
        try:
            yield
        except LabelStudioUnavailable as exc:
            console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise SystemExit(1) from None


def _nomenclature(name: str, folder: str | None) -> Nomenclature:
    from autocode.nomenclature import NomenclatureError
    from autocode.train import NOMENCLATURES

    if name not in NOMENCLATURES:
        raise NomenclatureError(f"--nomenclature {name!r}: one of {', '.join(NOMENCLATURES)}")
    return NOMENCLATURES[name][0](folder)


@annotate_app.command("create")
def create_command(
    project: ProjectOption,
    tasks: Annotated[
        str | None,
        typer.Option(
            "--tasks",
            "-t",
            help="Task file of `autocode annotate sample` (CSV/Parquet, local or s3://). "
            "Without it, the campaign is drawn here with --data/--window/--size.",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="Compacted prediction logs (as `annotate sample`)."),
    ] = None,
    window: Annotated[
        str | None, typer.Option("--window", "-w", help="As `annotate sample`.")
    ] = None,
    size: Annotated[int | None, typer.Option("--size", "-n", help="As `annotate sample`.")] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Keep the drawn task file here (with --data)."),
    ] = None,
    gold: Annotated[list[str] | None, typer.Option("--gold", help="As `annotate sample`.")] = None,
    seed: Annotated[int, typer.Option(help="As `annotate sample`.")] = 0,
    uncertainty_share: Annotated[float, typer.Option(help="As `annotate sample`.")] = 0.5,
    bands: Annotated[
        str, typer.Option(help="As `annotate sample`.")
    ] = "0.05,0.1,0.2,0.35,0.5,0.75",
    model_version: VersionsOption = None,
    double_share: Annotated[
        float,
        typer.Option(
            help="Share of the tasks two annotators code (Label Studio's overlap), for Cohen's "
            "kappa at export (0: each task once)."
        ),
    ] = 0.0,
    nomenclature: NomenclatureOption = "naf2008",
    nomenclatures: NomenclaturesFolderOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Create (or update) a Label Studio project for a campaign: the nomenclature as a
    searchable taxonomy, the description and its inputs shown, the model's top-5 as
    pre-annotations, "unsure" and skip; descriptions already in the project are not added
    again."""
    from autocode import data as datamod
    from autocode.annotate.labelstudio import LabelStudio, LabelStudioError, create_campaign

    with label_studio_errors():
        naf = _nomenclature(nomenclature, nomenclatures)
        if tasks is not None:
            table = datamod.read_table(tasks)
        else:
            if data is None or window is None or size is None:
                raise LabelStudioError("give --tasks FILE, or --data, --window and --size")
            table = _draw(
                data,
                window,
                size,
                seed,
                gold=gold,
                gold_text_column=None,
                bands=bands,
                uncertainty_share=uncertainty_share,
                model_version=model_version,
            ).tasks
            if output:
                datamod.write_table(table, output)
        if table.empty:
            raise LabelStudioError(f"the task file {tasks} has no rows")
        with LabelStudio.from_env(url, api_key) as client:
            result = create_campaign(client, table, naf, project, double_share=double_share)
    if json_output:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        verb = "created" if result.created else "updated"
        console.print(
            f"project {result.title!r} (#{result.project_id}) {verb}: {result.added} task(s) "
            f"added, {result.already_there} already there, {result.total} in all; "
            f"{result.url}",
            highlight=False,
        )


@annotate_app.command("progress")
def progress_command(
    project: ProjectOption,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """A campaign's progress: tasks done (annotated or skipped) out of its tasks."""
    from autocode.annotate.labelstudio import LabelStudio, campaign_progress

    with label_studio_errors(), LabelStudio.from_env(url, api_key) as client:
        progress = campaign_progress(client, project)
    if json_output:
        print(json.dumps(progress.to_dict(), indent=2))
    else:
        console.print(
            f"{progress.done}/{progress.total} task(s) done ({progress.annotations} "
            f"annotation(s), {progress.skipped} skipped)",
            highlight=False,
        )


@annotate_app.command("export")
def export_command(
    project: ProjectOption,
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="Gold folder (local or s3://bucket/prefix): each export is a new "
            "gold-<time>.parquet, listed in its manifest.json (never overwritten).",
        ),
    ],
    nomenclature: NomenclatureOption = "naf2008",
    nomenclatures: NomenclaturesFolderOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Export a campaign's annotations as a new version of the gold standard: text, inputs,
    code, annotator, time, skipped/unsure flags and the sampling design's weight, stratum and
    inclusion probability; codes not in the nomenclature are refused; Cohen's kappa where
    tasks were annotated twice."""
    from autocode.annotate.labelstudio import (
        LabelStudio,
        LabelStudioError,
        export_campaign,
        write_gold,
    )

    with label_studio_errors():
        naf = _nomenclature(nomenclature, nomenclatures)
        with LabelStudio.from_env(url, api_key) as client:
            export = export_campaign(client, project, naf)
        if export.gold.empty:
            raise LabelStudioError(
                f"project {project!r} has no annotation yet ({export.pending} task(s) pending): "
                "nothing to export"
            )
        written = write_gold(export, output, project=project)
    summary = {"file": written, **export.summary()}
    if json_output:
        print(json.dumps(summary, indent=2))
        return
    console.print(
        f"{written}: {summary['rows']} task(s), {summary['coded']} coded, {summary['skipped']} "
        f"skipped, {summary['unsure']} unsure; {summary['pending']} pending",
        highlight=False,
    )
    agreement = export.agreement
    if agreement.get("double_annotated", 0) >= 2:
        levels = ", ".join(
            f"{level} {values['kappa']}" for level, values in agreement["levels"].items()
        )
        console.print(
            f"Cohen's kappa on {agreement['double_annotated']} task(s) annotated twice: "
            f"{agreement['kappa']} (agreement {agreement['agreement']}); by level: {levels}",
            highlight=False,
        )
    else:
        console.print("no task annotated twice: no inter-annotator agreement", highlight=False)
