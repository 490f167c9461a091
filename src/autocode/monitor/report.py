"""The monitoring pages' content — figures (plotly) and tables — and the self-contained HTML
report built from them. The dashboard (`autocode.monitor.dashboard`) shows the same pages
interactively: one function per page computes its data and figures for both.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from autocode.monitor import drift as drift_tests
from autocode.monitor import query
from autocode.monitor.levels import codes_by_level

if TYPE_CHECKING:
    import duckdb

    from autocode.nomenclature import Nomenclature

PAGES = {
    "volume": "Volume",
    "automation": "Automatic coding",
    "ic": "Confidence index",
    "codes": "Codes by level",
    "drift": "Drift",
    "uncertain": "Uncertain predictions",
}
REFERENCE_COLOUR, CURRENT_COLOUR = "#8c8c8c", "#1f5fa8"
# plotly_white's layout and its defaults for the two kinds of traces drawn here: the whole
# template (defaults for every kind of trace) costs more to apply than a page's queries
_WHITE = pio.templates["plotly_white"]
TEMPLATE = go.layout.Template(
    layout=_WHITE.layout, data={"bar": _WHITE.data.bar, "scatter": _WHITE.data.scatter}
)


@dataclass
class Selection:
    """What the pages show: the current window (and the reference one for the drift page), a
    level, a threshold to simulate, model versions."""

    current: query.Window
    reference: query.Window
    level: str = "section"
    threshold: float | None = None
    model_versions: tuple[str, ...] = ()
    by: str = "hour"

    @property
    def filters(self) -> query.Filters:
        return query.Filters(self.current, self.model_versions)

    @property
    def reference_filters(self) -> query.Filters:
        return query.Filters(self.reference, self.model_versions)


@dataclass
class Page:
    title: str
    figures: list[go.Figure] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def _layout(fig: go.Figure, title: str, **layout: Any) -> go.Figure:
    fig.update_layout(
        **{
            "title": title,
            "template": TEMPLATE,
            "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
            "height": 360,
            "legend": {"orientation": "h", "y": -0.2},
            **layout,
        }
    )
    return fig


def _empty_note(count: int) -> list[str]:
    return ["No predictions in this window."] if not count else []


def volume_page(con: duckdb.DuckDBPyConnection, selection: Selection) -> Page:
    facts = query.summary(con, selection.filters)
    frame = query.volume(con, selection.filters, selection.by)
    fig = go.Figure(
        [
            go.Bar(x=frame["period"], y=frame["predictions"], name="predictions"),
            go.Scatter(
                x=frame["period"], y=frame["requests"], name="requests", mode="lines+markers"
            ),
        ]
    )
    _layout(fig, f"Predictions per {selection.by}", xaxis_title="time (UTC)", yaxis_title="count")
    latency = query.latency(con, selection.filters, selection.by)
    lat = go.Figure(
        [
            go.Scatter(
                x=latency["period"], y=latency[c], name=c.removesuffix("_ms"), mode="lines+markers"
            )
            for c in ("p50_ms", "p90_ms", "p99_ms")
        ]
    )
    _layout(lat, f"Latency per {selection.by} (ms)", xaxis_title="time (UTC)", yaxis_title="ms")
    models = query.by_model(con, selection.filters)
    return Page(
        PAGES["volume"],
        [fig, lat],
        [("Models", models)],
        _empty_note(facts["predictions"]),
        facts,
    )


def automation_page(con: duckdb.DuckDBPyConnection, selection: Selection) -> Page:
    facts = query.summary(con, selection.filters)
    frame = query.volume(con, selection.filters, selection.by)
    rate = go.Figure(
        go.Scatter(x=frame["period"], y=frame["auto_rate"], mode="lines+markers", name="rate")
    )
    _layout(
        rate,
        f"Automatic-coding rate per {selection.by}",
        xaxis_title="time (UTC)",
        yaxis_title="share coded automatically",
        yaxis_range=[0, 1],
    )
    grid = query.automation_by_threshold(con, selection.filters)
    curve = go.Figure(
        go.Scatter(x=grid["threshold"], y=grid["auto_rate"], mode="lines+markers", name="rate")
    )
    in_use = query.thresholds_in_use(con, selection.filters)
    if selection.threshold is not None:
        simulated = query.automation_by_threshold(con, selection.filters, [selection.threshold])
        facts["simulated_threshold"] = selection.threshold
        facts["simulated_auto_rate"] = simulated["auto_rate"].iloc[0]
        curve.add_vline(
            x=selection.threshold, line_dash="dash", annotation_text=f"{selection.threshold:.2f}"
        )
    _layout(
        curve,
        "Automatic-coding rate at each IC threshold",
        xaxis_title="threshold (IC ≥)",
        yaxis_title="share coded automatically",
        yaxis_range=[0, 1],
    )
    return Page(
        PAGES["automation"],
        [rate, curve],
        [("Thresholds in use", in_use), ("Rate by threshold", grid)],
        _empty_note(facts["predictions"]),
        facts,
    )


def ic_page(con: duckdb.DuckDBPyConnection, selection: Selection) -> Page:
    facts = query.summary(con, selection.filters) | query.ic_quantiles(con, selection.filters)
    hist = query.ic_histogram(con, selection.filters)
    fig = go.Figure(
        go.Bar(
            x=(hist["low"] + hist["high"]) / 2,
            y=hist["predictions"],
            width=0.045,
            name="predictions",
        )
    )
    if selection.threshold is not None:
        fig.add_vline(x=selection.threshold, line_dash="dash", annotation_text="threshold")
    _layout(
        fig,
        "Distribution of the confidence index (IC = p1 − p2)",
        xaxis_title="IC",
        yaxis_title="predictions",
        xaxis_range=[0, 1],
    )
    return Page(
        PAGES["ic"],
        [fig],
        [("IC by model version", query.ic_by_model(con, selection.filters))],
        _empty_note(facts["predictions"]),
        facts,
    )


def codes_page(
    con: duckdb.DuckDBPyConnection, selection: Selection, nomenclature: Nomenclature | None
) -> Page:
    table = codes_by_level(con, selection.filters, selection.level, nomenclature, top=25)
    labels = [
        f"{c} {lbl[:40]}".strip() for c, lbl in zip(table["code"], table["label"], strict=True)
    ]
    fig = go.Figure(
        go.Bar(
            x=table["predictions"],
            y=labels,
            orientation="h",
            marker_color=table["auto_rate"].tolist(),
            marker_colorscale="Blues",
            marker_colorbar={"title": "auto rate"},
        )
    )
    _layout(
        fig,
        f"Most predicted codes — {selection.level}",
        xaxis_title="predictions",
        yaxis_autorange="reversed",
        height=max(360, 22 * len(table) + 120),
    )
    return Page(
        PAGES["codes"],
        [fig],
        [(f"Codes ({selection.level})", table)],
        _empty_note(len(table)),
        {"level": selection.level, "codes": len(table)},
    )


def drift_page(
    con: duckdb.DuckDBPyConnection,
    selection: Selection,
    nomenclature: Nomenclature | None,
    config: drift_tests.DriftConfig | None = None,
) -> Page:
    config = config or drift_tests.DriftConfig()
    if selection.level not in config.levels:
        config = drift_tests.DriftConfig(
            **{**config.__dict__, "levels": (*config.levels, selection.level)}
        )
    counts = (
        query.code_counts(con, selection.reference_filters),
        query.code_counts(con, selection.filters),
    )  # read once: the tests and the chart of codes use them
    report = drift_tests.compare(
        con, selection.reference_filters, selection.filters, config, nomenclature, counts
    )
    ref_hist = query.ic_histogram(con, selection.reference_filters)
    cur_hist = query.ic_histogram(con, selection.filters)
    centres = (cur_hist["low"] + cur_hist["high"]) / 2
    ic_fig = go.Figure(
        [
            go.Bar(x=centres, y=ref_hist["share"], name="reference", marker_color=REFERENCE_COLOUR),
            go.Bar(x=centres, y=cur_hist["share"], name="current", marker_color=CURRENT_COLOUR),
        ]
    )
    _layout(
        ic_fig,
        "IC distribution: reference vs current",
        xaxis_title="IC",
        yaxis_title="share",
        barmode="group",
    )
    ref_codes = codes_by_level(
        con, selection.reference_filters, selection.level, nomenclature, None, counts[0]
    )
    cur_codes = codes_by_level(
        con, selection.filters, selection.level, nomenclature, None, counts[1]
    )
    both = (
        ref_codes[["code", "share"]]
        .merge(
            cur_codes[["code", "share"]],
            on="code",
            how="outer",
            suffixes=("_reference", "_current"),
        )
        .fillna(0)
    )
    both["gap"] = (both["share_current"] - both["share_reference"]).abs()
    both = both.sort_values("gap", ascending=False).head(20)
    codes_fig = go.Figure(
        [
            go.Bar(
                y=both["code"],
                x=both["share_reference"],
                name="reference",
                orientation="h",
                marker_color=REFERENCE_COLOUR,
            ),
            go.Bar(
                y=both["code"],
                x=both["share_current"],
                name="current",
                orientation="h",
                marker_color=CURRENT_COLOUR,
            ),
        ]
    )
    _layout(
        codes_fig,
        f"Codes whose share moved most — {selection.level}",
        xaxis_title="share",
        barmode="group",
        yaxis_autorange="reversed",
        height=max(360, 26 * len(both) + 120),
    )
    rows = []
    for test in report.tests:
        rows.append(
            {
                "variable": test.variable,
                "test": test.test,
                "statistic": test.statistic,
                "p-value": test.p_value,
                "effect": f"{test.effect_name} = {test.effect:.4f}"
                if test.effect is not None
                else "",
                "bound": test.effect_bound,
                "drift": "yes" if test.flagged else "no",
                **{k: round(v, 4) for k, v in test.divergences.items()},
                "note": test.note,
            }
        )
    tests = pd.DataFrame(rows)
    facts = {
        "drift": report.drift,
        "message": report.message,
        "reference_predictions": report.reference["predictions"],
        "current_predictions": report.current["predictions"],
        "alpha": report.alpha,
        "corrected_alpha": report.corrected_alpha,
    }
    return Page(PAGES["drift"], [ic_fig, codes_fig], [("Tests", tests)], [report.message], facts)


def uncertain_page(con: duckdb.DuckDBPyConnection, selection: Selection, limit: int = 50) -> Page:
    table = query.uncertain(con, selection.filters, limit)
    return Page(
        PAGES["uncertain"],
        [],
        [("Latest predictions not coded automatically", table)],
        _empty_note(len(table)),
        {"rows": len(table)},
    )


def all_pages(
    con: duckdb.DuckDBPyConnection,
    selection: Selection,
    nomenclature: Nomenclature | None = None,
    drift_config: drift_tests.DriftConfig | None = None,
) -> list[Page]:
    return [
        volume_page(con, selection),
        automation_page(con, selection),
        ic_page(con, selection),
        codes_page(con, selection, nomenclature),
        drift_page(con, selection, nomenclature, drift_config),
        uncertain_page(con, selection),
    ]


# -- the HTML report ---------------------------------------------------------------------------
def format_fact(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return "—" if value is None else str(value)


def table_html(frame: pd.DataFrame, max_rows: int = 50) -> str:
    shown = frame.head(max_rows)
    return shown.to_html(
        index=False,
        escape=True,
        na_rep="",
        float_format=lambda v: f"{v:.4g}",
        classes="table",
        border=0,
    )


def render_html(pages: list[Page], selection: Selection, source: str) -> str:
    """One self-contained HTML document (plotly.js inlined once, no network needed)."""
    parts = []
    first = True
    for index, page in enumerate(pages):
        section = [f'<section id="page-{index}"><h2>{html.escape(page.title)}</h2>']
        for note in page.notes:
            section.append(f'<p class="note">{html.escape(note)}</p>')
        facts = {k: v for k, v in page.facts.items() if not isinstance(v, (list, dict))}
        if facts:
            section.append(
                '<dl class="facts">'
                + "".join(
                    f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(format_fact(v))}</dd>"
                    for k, v in facts.items()
                )
                + "</dl>"
            )
        for fig in page.figures:
            section.append(
                fig.to_html(full_html=False, include_plotlyjs=first, config={"displaylogo": False})
            )
            first = False
        for title, frame in page.tables:
            section.append(f"<h3>{html.escape(title)}</h3>")
            section.append(table_html(frame) if len(frame) else "<p>(none)</p>")
        section.append("</section>")
        parts.append("\n".join(section))
    nav = " · ".join(f'<a href="#page-{i}">{html.escape(p.title)}</a>' for i, p in enumerate(pages))
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>autocode monitoring report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
h1 {{ margin-bottom: 0.2rem; }} .meta {{ color: #555; }}
section {{ border-top: 1px solid #ddd; margin-top: 2rem; padding-top: 1rem; }}
.facts {{ display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }}
.facts dt {{ font-weight: 600; }} .note {{ background: #fff6dd; padding: 0.5rem; }}
table.table {{ border-collapse: collapse; font-size: 0.85rem; }}
table.table td, table.table th {{
  border-bottom: 1px solid #eee; padding: 0.2rem 0.5rem; text-align: left; }}
</style></head>
<body>
<h1>autocode monitoring report</h1>
<p class="meta">Data: {html.escape(source)}<br>
Current window: {html.escape(selection.current.label())}; reference window:
{html.escape(selection.reference.label())}; level: {html.escape(selection.level)};
generated {generated}.</p>
<nav>{nav}</nav>
{"".join(parts)}
</body></html>
"""
