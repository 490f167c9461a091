"""The monitoring dashboard: a Dash app over the compacted prediction log.

Why Dash: its figures are plotly's, the same objects the HTML report embeds (one code path for
both, `autocode.monitor.report`); it is a plain WSGI (Flask) app, so gunicorn serves it on the
Unix socket the platform gives (``--bind unix:...``) with no websocket to proxy (Streamlit and
Panel/Bokeh need one, and a server of their own); its callbacks give interactive filters without
re-running a whole script; statisticians know plotly from R and Python. It serves its JavaScript
itself (nothing is fetched from a CDN).

Run it with ``autocode monitor dashboard --data s3://...`` or as the catalog's
``autocode-monitor`` service; gunicorn imports ``autocode.monitor.dashboard:create_server()``,
configured by the environment:

- ``AUTOCODE_MONITOR_DATA`` (required): the compacted log, ``s3://...`` or a folder;
- ``AUTOCODE_MONITOR_CACHE``: where S3 files are cached; ``AUTOCODE_NOMENCLATURES``: sections
  and labels;
- ``AUTOCODE_MONITOR_CONFIG`` (a YAML file) or ``AUTOCODE_MONITOR_SETTINGS`` (the same as JSON):
  alert and drift bounds;
- ``AUTOCODE_MONITOR_LOG`` and ``AUTOCODE_MONITOR_COMPACT_EVERY_S``: also compact that log into
  the data every so often (where nothing else schedules it: the local backend);
- ``AUTOCODE_MONITOR_BASIC_USERNAME`` / ``AUTOCODE_MONITOR_BASIC_PASSWORD``: require HTTP Basic
  (Kubernetes; locally only the platform's gateway can reach the socket).

Besides the pages: ``/healthz`` (liveness, no authentication) and ``/metrics`` (the alerts as
Prometheus metrics; current window = the last 24 hours, reference = the 7 days before).
Pages take exact windows from their link: ``/drift?current=START..END&reference=START..END``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import pandas as pd
from dash import Dash, Input, Output, dash_table, dcc, html

from autocode.monitor import alerts, query, report
from autocode.monitor.levels import check_level

if TYPE_CHECKING:
    import flask

log = logging.getLogger(__name__)

LEVEL_NAMES = {
    "section": "Section",
    "division": "Division",
    "group": "Group",
    "class": "Class",
    "subclass": "Subclass",
}


class Monitor:
    """What the dashboard's callbacks share: the dataset, nomenclature and bounds."""

    def __init__(
        self,
        data: str,
        nomenclatures: str | None = None,
        config: str | dict[str, Any] | None = None,
        cache_dir: str | None = None,
    ):
        self.dataset = query.Dataset(data, Path(cache_dir) if cache_dir else None)
        if isinstance(config, dict):
            self.config = alerts.AlertConfig.from_dict(config)
        else:
            self.config = alerts.AlertConfig.from_yaml(config) if config else alerts.AlertConfig()
        self.nomenclature = None
        try:
            from autocode.nomenclature import load_naf2008

            self.nomenclature = load_naf2008(nomenclatures)
        except Exception as exc:  # labels and sections are a nicety: say so, go on without
            log.warning("no nomenclature (%s): sections and labels left out", exc)
        self._metrics: tuple[float, bytes] | None = None
        self._metrics_lock = threading.Lock()

    def default_days(self) -> tuple[date, date, date, date]:
        """The current window (the last 7 days with data) and the reference (the 7 before)."""
        dates = self.dataset.dates()
        last = date.fromisoformat(dates[-1]) if dates else datetime.now(UTC).date()
        first = last - timedelta(days=6)
        return first, last, first - timedelta(days=7), first - timedelta(days=1)

    def connect(self, *windows: query.Window) -> Any:
        span = query.Window(min(w.start for w in windows), max(w.end for w in windows))
        return self.dataset.connect(span)

    def prometheus(self) -> bytes:
        with self._metrics_lock:
            if self._metrics and time.monotonic() - self._metrics[0] < 60:
                return self._metrics[1]
            end = datetime.now(UTC)
            current = query.Window(end - timedelta(hours=24), end)
            reference = query.Window(current.start - timedelta(days=7), current.start)
            con = self.connect(current, reference)
            result = alerts.evaluate(
                self.dataset,
                con,
                query.Filters(reference),
                query.Filters(current),
                self.config,
                self.nomenclature,
            )
            text = alerts.prometheus_text(result)
            self._metrics = (time.monotonic(), text)
            return text


def _cell(value: Any) -> Any:
    if isinstance(value, pd.Timestamp | datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, float):
        return float(f"{value:.4g}")  # significant digits: p-values are small
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return value


def table_component(title: str, frame: pd.DataFrame, ident: str) -> html.Div:
    records = [{k: _cell(v) for k, v in row.items()} for row in frame.to_dict("records")]
    return html.Div(
        [
            html.H3(title),
            # dash_table's __all__ is computed, so its typing exports no DataTable
            dash_table.DataTable(  # type: ignore[attr-defined]
                id=ident,
                data=records,
                columns=[{"name": c, "id": c} for c in frame.columns],
                page_size=15,
                sort_action="native",
                style_table={"overflowX": "auto"},
                style_cell={
                    "fontFamily": "system-ui, sans-serif",
                    "fontSize": 13,
                    "maxWidth": 420,
                    "whiteSpace": "normal",
                    "textAlign": "left",
                },
                style_header={"fontWeight": 600},
            )
            if records
            else html.P("(none)"),
        ]
    )


def page_component(name: str, page: report.Page) -> html.Div:
    children: list[Any] = [html.H2(page.title)]
    for index, note in enumerate(page.notes):
        children.append(html.P(note, className="note", id=f"{name}-note-{index}"))
    facts = {k: v for k, v in page.facts.items() if not isinstance(v, list | dict)}
    if facts:
        children.append(
            html.Dl(
                [
                    item
                    for k, v in facts.items()
                    for item in (html.Dt(k), html.Dd(report.format_fact(v), id=f"fact-{k}"))
                ],
                className="facts",
            )
        )
    for index, figure in enumerate(page.figures):
        children.append(
            dcc.Graph(id=f"{name}-figure-{index}", figure=figure, config={"displaylogo": False})
        )
    for index, (title, frame) in enumerate(page.tables):
        children.append(table_component(title, frame, f"{name}-table-{index}"))
    return html.Div(children, id=f"page-{name}", className="page")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; }
header { background: #1f3b5c; color: white; padding: 0.6rem 1.2rem; }
header a { color: white; margin-right: 1rem; text-decoration: none; }
header a:hover { text-decoration: underline; }
.controls { display: flex; flex-wrap: wrap; gap: 1rem; padding: 0.8rem 1.2rem;
            background: #f3f5f8; align-items: end; }
.controls label { display: block; font-size: 0.8rem; color: #444; }
main { padding: 0 1.2rem 2rem; }
.facts { display: grid; grid-template-columns: max-content auto; gap: 0.1rem 1rem; }
.facts dt { font-weight: 600; } .facts dd { margin: 0; }
.note { background: #fff6dd; padding: 0.5rem; }
"""


def create_app(monitor: Monitor) -> Dash:
    app = Dash(
        __name__,
        title="autocode monitoring",
        suppress_callback_exceptions=True,
        serve_locally=True,
        update_title="",  # the tab's title stays while callbacks run
    )
    app.index_string = app.index_string.replace("{%css%}", "{%css%}<style>" + STYLE + "</style>")

    def layout() -> html.Div:
        first, last, ref_first, ref_last = monitor.default_days()
        return html.Div(
            [
                dcc.Location(id="url"),
                html.Header(
                    [html.Strong("autocode monitoring", style={"marginRight": "2rem"})]
                    + [
                        dcc.Link(title, href=f"/{name}", id=f"nav-{name}")
                        for name, title in report.PAGES.items()
                    ]
                ),
                html.Div(
                    [
                        html.Div(
                            [
                                html.Label("Current window"),
                                dcc.DatePickerRange(
                                    id="current",
                                    start_date=first.isoformat(),
                                    end_date=last.isoformat(),
                                    display_format="YYYY-MM-DD",
                                ),
                            ]
                        ),
                        html.Div(
                            [
                                html.Label("Reference window (drift)"),
                                dcc.DatePickerRange(
                                    id="reference",
                                    start_date=ref_first.isoformat(),
                                    end_date=ref_last.isoformat(),
                                    display_format="YYYY-MM-DD",
                                ),
                            ]
                        ),
                        html.Div(
                            [
                                html.Label("Level"),
                                dcc.Dropdown(
                                    id="level",
                                    options=[
                                        {"label": v, "value": k} for k, v in LEVEL_NAMES.items()
                                    ],
                                    value="section",
                                    clearable=False,
                                    style={"width": "10rem"},
                                ),
                            ]
                        ),
                        html.Div(
                            [
                                html.Label("Threshold to simulate"),
                                dcc.Slider(
                                    id="threshold",
                                    min=0,
                                    max=1,
                                    step=0.01,
                                    value=None,
                                    marks={i / 10: f"{i / 10:.1f}" for i in range(0, 11, 2)},
                                    tooltip={"placement": "bottom"},
                                ),
                            ],
                            style={"width": "16rem"},
                        ),
                        html.Div(
                            [
                                html.Label("By"),
                                dcc.RadioItems(
                                    id="by", options=["hour", "day"], value="day", inline=True
                                ),
                            ]
                        ),
                    ],
                    className="controls",
                ),
                html.Main(dcc.Loading(html.Div(id="page"))),
            ]
        )

    app.layout = layout

    @app.callback(
        Output("page", "children"),
        Input("url", "pathname"),
        Input("url", "search"),
        Input("current", "start_date"),
        Input("current", "end_date"),
        Input("reference", "start_date"),
        Input("reference", "end_date"),
        Input("level", "value"),
        Input("threshold", "value"),
        Input("by", "value"),
    )
    def render(
        pathname: str | None,
        search: str | None,
        cur_start: str,
        cur_end: str,
        ref_start: str,
        ref_end: str,
        level: str,
        threshold: float | None,
        by: str,
    ) -> html.Div:
        name = (pathname or "/").strip("/") or "volume"
        if name not in report.PAGES:
            return html.Div(
                [html.H2("Not found"), html.P(f"No page {pathname!r}.")], id="page-missing"
            )
        try:
            current = query.day_window(
                date.fromisoformat(cur_start[:10]), date.fromisoformat(cur_end[:10])
            )
            reference = query.day_window(
                date.fromisoformat(ref_start[:10]), date.fromisoformat(ref_end[:10])
            )
            # a link may name exact windows: ?current=START..END&reference=START..END
            linked = parse_qs((search or "").lstrip("?"))
            if "current" in linked:
                current = query.Window.parse(linked["current"][0])
            if "reference" in linked:
                reference = query.Window.parse(linked["reference"][0])
            selection = report.Selection(current, reference, check_level(level), threshold, by=by)
            con = monitor.connect(current, reference)
            page = _page(name, con, selection, monitor)
            if linked:
                windows = f"Current window {current.label()}; reference {reference.label()}."
                page.notes.insert(0, windows)
        except (query.MonitorError, ValueError, TypeError) as exc:
            return html.Div(
                [
                    html.H2(report.PAGES[name]),
                    html.P(f"Cannot show this page: {exc}", className="note", id="page-error"),
                ]
            )
        return page_component(name, page)

    server = app.server
    username = os.environ.get("AUTOCODE_MONITOR_BASIC_USERNAME") or ""
    password = os.environ.get("AUTOCODE_MONITOR_BASIC_PASSWORD") or ""
    if password:

        @server.before_request
        def require_basic() -> flask.Response | None:
            import hmac

            from flask import Response, request

            if request.path == "/healthz":
                return None
            auth = request.authorization
            given = (auth.username or "", auth.password or "") if auth else ("", "")
            pairs = zip(given, (username, password), strict=True)
            if all(hmac.compare_digest(a.encode(), b.encode()) for a, b in pairs):
                return None
            challenge = {"WWW-Authenticate": 'Basic realm="autocode monitor"'}
            return Response("authentication required", 401, challenge)

    @server.route("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "data": monitor.dataset.store.uri}

    @server.route("/metrics")
    def metrics() -> flask.Response:
        from flask import Response

        return Response(monitor.prometheus(), mimetype="text/plain; version=0.0.4")

    return app


def _page(name: str, con: Any, selection: report.Selection, monitor: Monitor) -> report.Page:
    if name == "volume":
        return report.volume_page(con, selection)
    if name == "automation":
        return report.automation_page(con, selection)
    if name == "ic":
        return report.ic_page(con, selection)
    if name == "codes":
        return report.codes_page(con, selection, monitor.nomenclature)
    if name == "drift":
        return report.drift_page(con, selection, monitor.nomenclature, monitor.config.drift_config)
    return report.uncertain_page(con, selection)


def create_server() -> Any:
    """The WSGI app gunicorn serves, configured by the environment (see the module's doc)."""
    data = os.environ.get("AUTOCODE_MONITOR_DATA")
    if not data:
        raise SystemExit("set AUTOCODE_MONITOR_DATA to the compacted log (s3://... or a folder)")
    import json

    settings = os.environ.get("AUTOCODE_MONITOR_SETTINGS")
    config: str | dict[str, Any] | None = os.environ.get("AUTOCODE_MONITOR_CONFIG") or None
    if settings:
        try:
            config = json.loads(settings)
        except ValueError as exc:
            raise SystemExit(f"AUTOCODE_MONITOR_SETTINGS is not JSON: {exc}") from None
    monitor = Monitor(
        data,
        os.environ.get("AUTOCODE_NOMENCLATURES") or None,
        config,
        os.environ.get("AUTOCODE_MONITOR_CACHE") or None,
    )
    log_uri = os.environ.get("AUTOCODE_MONITOR_LOG")
    every = float(os.environ.get("AUTOCODE_MONITOR_COMPACT_EVERY_S") or 0)
    if log_uri and every > 0:
        start_compaction(log_uri, data, every)
    return create_app(monitor).server


def start_compaction(log_uri: str, data: str, every_s: float) -> threading.Thread:
    """Compact ``log_uri`` into ``data`` every ``every_s`` seconds in a background thread (the
    local backend has no CronJob); a failed run is logged and tried again next time."""
    from autocode.monitor.etl import compact
    from autocode.monitor.storage import open_store

    def run() -> None:
        while True:
            try:
                result = compact(open_store(log_uri), open_store(data))
                if result.new_rows or result.rejected:
                    log.info("compacted %s", result.to_dict())
            except Exception as exc:  # S3 down, a bad manifest: say it, try again later
                log.error("compaction of %s failed: %s", log_uri, exc)
            time.sleep(every_s)

    thread = threading.Thread(target=run, name="autocode-compaction", daemon=True)
    thread.start()
    return thread
