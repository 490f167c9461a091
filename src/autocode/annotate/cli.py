"""``autocode annotate``: annotation campaigns drawn from the prediction log. Errors a user can
cause print one line starting with ``error:`` and exit with code 2 (as the other commands)."""

from __future__ import annotations

import contextlib
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from autocode.monitor.cli import DataOption, VersionsOption

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
    from autocode.annotate.campaign import annotated_keys, design_summary, sample_campaign
    from autocode.monitor.query import Dataset, Window

    with user_errors():
        done: set[str] = set()
        for uri in gold or []:
            done |= annotated_keys(datamod.read_table(uri), gold_text_column, uri)
        campaign = sample_campaign(
            Dataset(data),
            Window.parse(window),
            size,
            seed,
            annotated=done,
            bands=_bands(bands),
            uncertainty_share=uncertainty_share,
            model_versions=model_version or (),
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
