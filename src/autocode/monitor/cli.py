"""``autocode logs`` (the ETL) and ``autocode monitor`` (metrics, drift, alerts, report,
dashboard, replay): thin commands over `autocode.monitor`. Errors a user can cause print one
line starting with ``error:`` and exit with code 2 (as the other autocode commands)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

logs_app = typer.Typer(help="The prediction log: compaction into Parquet.", no_args_is_help=True)
monitor_app = typer.Typer(
    help="Monitoring of the predictions: metrics, drift, alerts, report, dashboard, replay.",
    no_args_is_help=True,
)
console = Console(stderr=True)

DataOption = Annotated[
    str,
    typer.Option(
        "--data",
        "-d",
        envvar="AUTOCODE_MONITOR_DATA",
        help="The compacted Parquet: s3://bucket/prefix or a folder ($AUTOCODE_MONITOR_DATA).",
    ),
]
WindowOption = Annotated[
    str | None,
    typer.Option(
        "--window",
        "-w",
        help="START..END (2026-11-01..2026-11-08, end excluded; or ISO times), last:7d, last:24h."
        " Default: the last 7 days that have data.",
    ),
]
ReferenceOption = Annotated[
    str | None,
    typer.Option(
        "--reference",
        "-r",
        help="Reference window, same forms (default: as long as the current one, just before).",
    ),
]
NomenclatureOption = Annotated[
    Path | None,
    typer.Option(
        "--nomenclatures",
        help="Nomenclature folder, for sections and labels (default: $AUTOCODE_NOMENCLATURES, "
        "then ../shared/data/nomenclatures; none found: codes by pattern, no sections).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
VersionsOption = Annotated[
    list[str] | None, typer.Option("--model-version", help="Only these model versions.")
]


def user_errors() -> contextlib.AbstractContextManager[None]:
    """Errors the user can fix, and bad values (ValueError), as one line and exit code 2."""
    from autocode.errors import reported

    return reported(ValueError)


def load_nomenclature(folder: Path | None, required: bool = False):
    from autocode.nomenclature import NomenclatureError, load_naf2008

    try:
        return load_naf2008(folder)
    except (NomenclatureError, FileNotFoundError) as exc:
        if required or folder is not None:
            raise
        console.print(f"[yellow]no nomenclature ({exc}): sections and labels left out[/yellow]")
        return None


def resolve_windows(dataset: Any, window: str | None, reference: str | None) -> tuple[Any, Any]:
    from datetime import date, timedelta

    from autocode.monitor.query import Window, day_window

    if window:
        current = Window.parse(window)
    else:
        dates = dataset.dates()
        last = date.fromisoformat(dates[-1]) if dates else date.today()
        current = day_window(last - timedelta(days=6), last)
    if reference:
        before = Window.parse(reference)
    else:
        before = Window(current.start - (current.end - current.start), current.start)
    return current, before


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str, ensure_ascii=False))
        return
    import pandas as pd

    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, pd.DataFrame):
                console.print(f"[bold]{key}[/bold]")
                print(value.to_string(index=False))
            else:
                print(f"{key}: {value}")
    else:
        print(data)


def _records(frame: Any) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records", date_format="iso"))


# -- logs -------------------------------------------------------------------------------------
@logs_app.command("compact")
def compact_command(
    source: Annotated[
        str,
        typer.Option(
            "--source",
            "-s",
            envvar="AUTOCODE_MONITOR_LOG",
            help="The shipped log: s3://bucket/prefix (the API's log_s3_uri) or a folder.",
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            envvar="AUTOCODE_MONITOR_DATA",
            help="Where the Parquet goes (default: the source followed by -parquet).",
        ),
    ] = None,
    date: Annotated[
        list[str] | None, typer.Option("--date", help="Only these days (YYYY-MM-DD).")
    ] = None,
    max_rows_per_file: Annotated[int, typer.Option(help="Rows per Parquet file.")] = 2_000_000,
    max_batch_bytes: Annotated[
        int, typer.Option(help="JSON-lines bytes merged per commit (bounds the memory).")
    ] = 256 * 1024 * 1024,
    orphan_grace: Annotated[
        float,
        typer.Option(help="Delete files no manifest lists once this old (seconds)."),
    ] = 3600.0,
    nice: Annotated[
        int,
        typer.Option(
            help="Lower this run's CPU priority by this much (0-19): the compaction is background "
            "work and yields the CPU to the API beside it."
        ),
    ] = 10,
    threads: Annotated[
        int,
        typer.Option(
            min=1,
            help="Threads it decodes and writes with (Arrow's CPU pool): 1 leaves the other "
            "cores to the API beside it (docs/monitoring.md).",
        ),
    ] = 1,
    json_output: JsonOption = False,
) -> None:
    """JSON-lines segments → Parquet partitioned by date. Idempotent; a killed run converges."""
    import pyarrow as pa

    from autocode.monitor.etl import CompactOptions, compact
    from autocode.monitor.storage import open_store

    if nice > 0 and hasattr(os, "nice"):
        os.nice(min(nice, 19))
    pa.set_cpu_count(threads)
    with user_errors():
        target = output or source.rstrip("/") + "-parquet"
        options = CompactOptions(
            max_rows_per_file=max_rows_per_file,
            max_batch_bytes=max_batch_bytes,
            orphan_grace_s=orphan_grace,
        )
        with _single_run(target):
            result = compact(
                open_store(source),
                open_store(target),
                options,
                dates=date,
                progress=None if json_output else console.log,
            )
    summary = result.to_dict()
    if json_output:
        print(json.dumps(summary, indent=2))
        return
    console.print(
        f"{summary['new_rows']} new records in {len(summary['days'])} day(s), "
        f"{summary['rejected']} line(s) rejected, {summary['seconds']} s → {target}"
    )
    for day in summary["days"]:
        if day["rejected"]:
            console.print(
                f"[yellow]{day['date']}: {day['rejected']} line(s) rejected, kept in "
                f"{target.rstrip('/')}/_rejected/date={day['date']}/[/yellow]"
            )


@contextlib.contextmanager
def _single_run(target: str) -> Iterator[None]:
    """One compaction per target on this machine at a time (cron runs may overlap); on
    Kubernetes the CronJob forbids concurrent runs."""
    import fcntl
    import hashlib
    import tempfile

    digest = hashlib.sha256(target.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"autocode-compact-{digest}.lock"
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another compaction of {target} is running") from None
        yield


# -- monitor ----------------------------------------------------------------------------------
def _open(data: str):
    from autocode.monitor.query import Dataset

    return Dataset(data)


@monitor_app.command("metrics")
def metrics_command(
    data: DataOption,
    window: WindowOption = None,
    by: Annotated[str, typer.Option(help="hour or day.")] = "day",
    model_version: VersionsOption = None,
    json_output: JsonOption = False,
) -> None:
    """Volume, automatic coding (also at other thresholds), IC, latency, per model version."""
    from autocode.monitor import query

    with user_errors():
        dataset = _open(data)
        current, _ = resolve_windows(dataset, window, None)
        filters = query.Filters(current, tuple(model_version or ()))
        con = dataset.connect(current)
        result = {
            "window": current.label(),
            "summary": query.summary(con, filters),
            "ic_quantiles": query.ic_quantiles(con, filters),
            "volume": query.volume(con, filters, by),
            "latency": query.latency(con, filters, by),
            "automation_by_threshold": query.automation_by_threshold(con, filters),
            "models": query.by_model(con, filters),
        }
    if json_output:
        result = {k: _records(v) if hasattr(v, "to_json") else v for k, v in result.items()}
    _print(result, json_output)


@monitor_app.command("codes")
def codes_command(
    data: DataOption,
    window: WindowOption = None,
    level: Annotated[str, typer.Option(help="section, division, group, class, subclass.")] = (
        "section"
    ),
    top: Annotated[int, typer.Option(help="Most frequent codes shown.")] = 20,
    nomenclatures: NomenclatureOption = None,
    model_version: VersionsOption = None,
    json_output: JsonOption = False,
) -> None:
    """Predicted codes at a level of the nomenclature, most frequent first."""
    from autocode.monitor import query
    from autocode.monitor.levels import check_level, codes_by_level

    with user_errors():
        check_level(level)
        dataset = _open(data)
        current, _ = resolve_windows(dataset, window, None)
        filters = query.Filters(current, tuple(model_version or ()))
        table = codes_by_level(
            dataset.connect(current), filters, level, load_nomenclature(nomenclatures), top
        )
    _print(_records(table) if json_output else {f"codes ({level})": table}, json_output)


@monitor_app.command("uncertain")
def uncertain_command(
    data: DataOption,
    window: WindowOption = None,
    limit: Annotated[int, typer.Option(help="Rows shown.")] = 20,
    json_output: JsonOption = False,
) -> None:
    """The latest predictions not coded automatically."""
    from autocode.monitor import query

    with user_errors():
        dataset = _open(data)
        current, _ = resolve_windows(dataset, window, None)
        table = query.uncertain(dataset.connect(current), query.Filters(current), limit)
    _print(_records(table) if json_output else {"uncertain": table}, json_output)


def _alert_config(config: Path | None):
    from autocode.monitor.alerts import AlertConfig

    return AlertConfig.from_yaml(config) if config else AlertConfig()


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", envvar="AUTOCODE_MONITOR_CONFIG", help="Alert and drift bounds (YAML)."
    ),
]


@monitor_app.command("drift")
def drift_command(
    data: DataOption,
    window: WindowOption = None,
    reference: ReferenceOption = None,
    level: Annotated[
        list[str] | None, typer.Option("--level", help="Levels tested (repeatable).")
    ] = None,
    config: ConfigOption = None,
    nomenclatures: NomenclatureOption = None,
    json_output: JsonOption = False,
) -> None:
    """Compare a reference window with the current one: KS on the IC, chi-squared and
    divergences on the codes of each level. Exit code 1 when drift is flagged."""
    from autocode.monitor import query
    from autocode.monitor.drift import compare

    with user_errors():
        settings = _alert_config(config).drift_config
        if level:
            settings.levels = tuple(level)
        dataset = _open(data)
        current, before = resolve_windows(dataset, window, reference)
        con = dataset.connect(
            query.Window(min(before.start, current.start), max(before.end, current.end))
        )
        report = compare(
            con,
            query.Filters(before),
            query.Filters(current),
            settings,
            load_nomenclature(nomenclatures),
        )
    if json_output:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        from rich.table import Table

        console.print(
            f"reference {report.reference['window']}: {report.reference['predictions']} predictions"
        )
        console.print(
            f"current   {report.current['window']}: {report.current['predictions']} predictions"
        )
        table = Table(
            title=f"drift tests (alpha {report.alpha}, per test {report.corrected_alpha:.2g})"
        )
        for column in ("variable", "test", "statistic", "p-value", "effect", "bound", "drift"):
            table.add_column(column)
        for t in report.tests:
            table.add_row(
                t.variable,
                t.test,
                _num(t.statistic),
                _num(t.p_value),
                f"{t.effect_name} {_num(t.effect)}",
                str(t.effect_bound),
                "YES" if t.flagged else "no",
            )
        console.print(table)
        console.print(report.message)
    raise SystemExit(1 if report.drift else 0)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


@monitor_app.command("alerts")
def alerts_command(
    data: DataOption,
    window: WindowOption = None,
    reference: ReferenceOption = None,
    config: ConfigOption = None,
    nomenclatures: NomenclatureOption = None,
    output_format: Annotated[str, typer.Option("--format", help="json or prometheus.")] = "json",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write here (e.g. a node_exporter textfile) instead of stdout."
        ),
    ] = None,
    exit_code: Annotated[
        bool, typer.Option("--exit-code", help="Exit with code 1 when an alert fires.")
    ] = False,
) -> None:
    """Check the configured bounds on the current window (against the reference)."""
    from autocode.monitor import query
    from autocode.monitor.alerts import evaluate, prometheus_text

    if output_format not in ("json", "prometheus"):
        console.print("[red]error:[/red] --format: json or prometheus")
        raise SystemExit(2)
    with user_errors():
        settings = _alert_config(config)
        dataset = _open(data)
        current, before = resolve_windows(dataset, window, reference)
        con = dataset.connect(
            query.Window(min(before.start, current.start), max(before.end, current.end))
        )
        report = evaluate(
            dataset,
            con,
            query.Filters(before),
            query.Filters(current),
            settings,
            load_nomenclature(nomenclatures),
        )
    if output_format == "json":
        text = json.dumps(report.to_dict(), indent=2, default=str).encode() + b"\n"
    else:
        text = prometheus_text(report)
    if output:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_bytes(text)
        os.replace(tmp, output)
    else:
        sys.stdout.buffer.write(text)
    for alert in report.firing:
        console.print(f"[red]alert[/red] {alert.name}: {alert.message}", highlight=False)
    raise SystemExit(1 if exit_code and report.firing else 0)


@monitor_app.command("report")
def report_command(
    data: DataOption,
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path(
        "report.html"
    ),
    window: WindowOption = None,
    reference: ReferenceOption = None,
    level: Annotated[str, typer.Option(help="Level of the codes and drift pages.")] = "section",
    threshold: Annotated[
        float | None, typer.Option(help="A threshold to simulate on the automation page.")
    ] = None,
    config: ConfigOption = None,
    nomenclatures: NomenclatureOption = None,
) -> None:
    """A self-contained HTML report: the dashboard's pages, with their figures and tables."""
    from autocode.monitor import query
    from autocode.monitor.levels import check_level
    from autocode.monitor.report import Selection, all_pages, render_html

    with user_errors():
        check_level(level)
        dataset = _open(data)
        current, before = resolve_windows(dataset, window, reference)
        selection = Selection(current, before, level, threshold)
        con = dataset.connect(
            query.Window(min(before.start, current.start), max(before.end, current.end))
        )
        pages = all_pages(
            con, selection, load_nomenclature(nomenclatures), _alert_config(config).drift_config
        )
        output.write_text(render_html(pages, selection, dataset.store.uri))
    console.print(f"report written to {output}")


@monitor_app.command("dashboard")
def dashboard_command(
    data: DataOption,
    uds: Annotated[str | None, typer.Option(help="Listen on this Unix socket.")] = None,
    host: Annotated[str, typer.Option(help="Host (without --uds).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (without --uds).")] = 8050,
    threads: Annotated[int, typer.Option(help="Threads serving requests.")] = 4,
    nomenclatures: NomenclatureOption = None,
    config: ConfigOption = None,
) -> None:
    """Serve the dashboard (gunicorn, one process); the same as the catalog's service."""
    env = dict(os.environ, AUTOCODE_MONITOR_DATA=data)
    if nomenclatures:
        env["AUTOCODE_NOMENCLATURES"] = str(nomenclatures)
    if config:
        env["AUTOCODE_MONITOR_CONFIG"] = str(config)
    bind = f"unix:{uds}" if uds else f"{host}:{port}"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        bind,
        "--workers",
        "1",
        "--threads",
        str(threads),
        "--timeout",
        "120",
        "--no-control-socket",
        "autocode.monitor.dashboard:create_server()",
    ]
    os.execve(sys.executable, command, env)  # noqa: S606 (replaces this process)


@monitor_app.command("replay")
def replay_command(
    api: Annotated[str, typer.Option(help="Base URL of the prediction API.")],
    input: Annotated[
        list[Path] | None,
        typer.Option(
            "--input", "-i", help="CSV of descriptions (default: the dev set and examples)."
        ),
    ] = None,
    rate: Annotated[float, typer.Option(help="Requests per second.")] = 10.0,
    count: Annotated[int, typer.Option(help="Requests to send.")] = 200,
    batch: Annotated[int, typer.Option(help="Descriptions per request (POST when > 1).")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed of the sampling and the drift.")] = 0,
    drift_sections: Annotated[
        str | None,
        typer.Option(help="Over-sample these sections, e.g. 'F,I' (a shifted mix of sections)."),
    ] = None,
    drift_factor: Annotated[
        float, typer.Option(help="How much more likely (with --drift-sections).")
    ] = 5.0,
    drift_wording: Annotated[
        float, typer.Option(help="Share of texts rewritten in new wording (abbreviations, noise).")
    ] = 0.0,
    api_key: Annotated[
        str | None, typer.Option(envvar="AUTOCODE_API_KEY", help="X-API-Key.")
    ] = None,
    bearer: Annotated[
        str | None,
        typer.Option(
            envvar="AUTOCODE_REPLAY_BEARER", help="Authorization: Bearer (the platform's token)."
        ),
    ] = None,
    uds: Annotated[str | None, typer.Option(help="Connect through this Unix socket.")] = None,
    nomenclatures: NomenclatureOption = None,
    json_output: JsonOption = False,
) -> None:
    """Replay real descriptions against a running API at a given rate, optionally drifted."""
    from autocode.monitor.replay import ReplayOptions, load_descriptions, replay

    with user_errors():
        nomenclature = load_nomenclature(nomenclatures, required=bool(drift_sections))
        texts = load_descriptions(input, nomenclature)
        options = ReplayOptions(
            rate=rate,
            count=count,
            batch=batch,
            seed=seed,
            drift_sections=tuple(s.strip().upper() for s in drift_sections.split(","))
            if drift_sections
            else (),
            drift_factor=drift_factor,
            drift_wording=drift_wording,
        )
        headers = {}
        if api_key:
            headers["X-API-Key"] = api_key
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        result = replay(
            api,
            texts,
            options,
            headers=headers,
            uds=uds,
            progress=None if json_output else console.log,
        )
    if json_output:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(
            f"{result.sent} requests, {result.predictions} predictions in {result.seconds:.1f} s "
            f"({result.failures} failed); auto rate {result.auto_rate:.1%}"
        )
    raise SystemExit(1 if result.failures else 0)


@monitor_app.command("generate")
def generate_command(
    output: Annotated[
        str, typer.Option("--output", "-o", help="Folder or s3:// for the log segments.")
    ],
    records: Annotated[int, typer.Option(help="Predictions to generate.")] = 100_000,
    start: Annotated[str, typer.Option(help="First day (YYYY-MM-DD).")] = "2026-11-01",
    days: Annotated[int, typer.Option(help="Days covered.")] = 7,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    nomenclatures: NomenclatureOption = None,
) -> None:
    """Write a generated prediction log (JSON-lines segments), for demonstrations and benchmarks."""
    from datetime import UTC, datetime, timedelta

    from autocode.monitor.storage import open_store
    from autocode.monitor.synthetic import synthetic_table, to_segments

    with user_errors():
        nomenclature = load_nomenclature(nomenclatures, required=True)
        first = datetime.fromisoformat(start).replace(tzinfo=UTC)
        table = synthetic_table(
            records, nomenclature.codes(), first, first + timedelta(days=days), seed=seed
        )
        store = open_store(output)
        segments = 0
        for key, body in to_segments(table):
            store.write(key, body)
            segments += 1
    console.print(f"{records} records in {segments} segments written to {output}")
