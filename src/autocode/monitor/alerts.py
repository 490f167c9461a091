"""Alerts: bounds on the monitoring numbers of a current window (against a reference window).

`evaluate` computes the numbers, runs the drift tests and checks each configured bound; the
result is printed as JSON (``autocode monitor alerts``) and as Prometheus metrics (the same
command with ``--format prometheus``, and the dashboard's ``/metrics``), so that an alert manager
fires on ``autocode_monitor_alert == 1``. Defaults are in `AlertConfig` (docs/monitoring.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autocode.monitor import drift as drift_tests
from autocode.monitor.query import Dataset, Filters, summary

if TYPE_CHECKING:
    import duckdb

    from autocode.nomenclature import Nomenclature


@dataclass
class AlertConfig:
    min_predictions: int = 1  # fewer in the current window: traffic stopped (or the log)
    min_auto_rate: float | None = None  # absolute floor of the automatic-coding rate
    max_auto_rate_drop: float | None = 0.10  # fall of the rate from the reference, in points
    max_ic_mean_drop: float | None = 0.10  # fall of the mean IC from the reference
    max_latency_p99_ms: float | None = 1000.0
    max_rejected_lines: int | None = 0  # log lines the ETL could not read, in the window's days
    drift: bool = True  # alert when the drift tests flag drift
    drift_config: drift_tests.DriftConfig = field(default_factory=drift_tests.DriftConfig)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AlertConfig:
        raw = dict(raw or {})
        drift_raw = raw.pop("drift_tests", None) or {}
        unknown = set(raw) - (set(cls.__dataclass_fields__) - {"drift_config"})
        if unknown:
            known = [*sorted(set(cls.__dataclass_fields__) - {"drift_config"}), "drift_tests"]
            raise ValueError(f"unknown alert setting(s) {sorted(unknown)}; known: {known}")
        return cls(**raw, drift_config=drift_tests.DriftConfig.from_dict(drift_raw))

    @classmethod
    def from_yaml(cls, path: str | Path) -> AlertConfig:
        import yaml

        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not YAML ({exc})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of settings")
        return cls.from_dict(raw)


@dataclass
class Alert:
    name: str
    firing: bool
    value: float | None
    bound: float | None
    message: str


@dataclass
class AlertReport:
    current: dict[str, Any]
    reference: dict[str, Any]
    drift: drift_tests.DriftReport
    alerts: list[Alert]

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.firing]

    def to_dict(self) -> dict[str, Any]:
        return {
            "firing": [a.name for a in self.firing],
            "alerts": [asdict(a) for a in self.alerts],
            "current": _jsonable(self.current),
            "reference": _jsonable(self.reference),
            "drift": self.drift.to_dict(),
        }


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in values.items()}


def rejected_lines(dataset: Dataset, filters: Filters) -> int:
    manifests = dataset.manifests()
    return sum(
        int(manifests[d].get("rejected", 0)) for d in filters.window.dates() if d in manifests
    )


def evaluate(
    dataset: Dataset,
    con: duckdb.DuckDBPyConnection,
    reference: Filters,
    current: Filters,
    config: AlertConfig | None = None,
    nomenclature: Nomenclature | None = None,
) -> AlertReport:
    config = config or AlertConfig()
    now, before = summary(con, current), summary(con, reference)
    now["rejected_lines"] = rejected_lines(dataset, current)
    report = drift_tests.compare(con, reference, current, config.drift_config, nomenclature)
    alerts = []

    def check(name: str, value: float | None, bound: float | None, low: bool, what: str) -> None:
        if bound is None:
            return
        if value is None:
            alerts.append(Alert(name, False, None, bound, f"{what}: no data"))
            return
        firing = value < bound if low else value > bound
        relation = (
            ("below" if firing else "at or above") if low else ("above" if firing else "within")
        )
        alerts.append(Alert(name, firing, value, bound, f"{what} {value:.4g} {relation} {bound:g}"))

    check("predictions", now["predictions"], config.min_predictions, True, "predictions")
    check("auto_rate", now["auto_rate"], config.min_auto_rate, True, "automatic-coding rate")
    if before["auto_rate"] is not None and now["auto_rate"] is not None:
        drop = before["auto_rate"] - now["auto_rate"]
        check(
            "auto_rate_drop",
            drop,
            config.max_auto_rate_drop,
            False,
            "fall of the automatic-coding rate",
        )
    if before["ic_mean"] is not None and now["ic_mean"] is not None:
        drop = before["ic_mean"] - now["ic_mean"]
        check("ic_mean_drop", drop, config.max_ic_mean_drop, False, "fall of the mean IC")
    check(
        "latency_p99_ms",
        now["latency_p99_ms"],
        config.max_latency_p99_ms,
        False,
        "p99 latency (ms)",
    )
    check(
        "rejected_lines",
        now["rejected_lines"],
        config.max_rejected_lines,
        False,
        "rejected log lines",
    )
    if config.drift:
        alerts.append(Alert("drift", report.drift, float(report.drift), None, report.message))
    return AlertReport(now, before, report, alerts)


def prometheus_text(report: AlertReport) -> bytes:
    """The report as Prometheus metrics (text exposition format)."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    prefix = "autocode_monitor_"

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(prefix + name, doc, labels, registry=registry)

    window = gauge("predictions", "Predictions in the window", ("window",))
    auto = gauge("auto_rate", "Automatic-coding rate in the window", ("window",))
    ic = gauge("ic_mean", "Mean confidence index in the window", ("window",))
    latency = gauge("latency_p99_ms", "p99 latency (ms) in the window", ("window",))
    for name, values in (("current", report.current), ("reference", report.reference)):
        window.labels(name).set(values["predictions"] or 0)
        for metric, key in ((auto, "auto_rate"), (ic, "ic_mean"), (latency, "latency_p99_ms")):
            if values[key] is not None:
                metric.labels(name).set(values[key])
    gauge("rejected_lines", "Log lines the ETL could not read (current window's days)").set(
        report.current.get("rejected_lines", 0)
    )
    statistic = gauge("drift_statistic", "Drift test statistic", ("test", "variable"))
    p_value = gauge("drift_p_value", "Drift test p-value", ("test", "variable"))
    effect = gauge("drift_effect", "Drift effect size (KS D, PSI)", ("test", "variable", "effect"))
    flagged = gauge("drift_flagged", "1 when the test flags drift", ("test", "variable"))
    for test in report.drift.tests:
        if test.statistic is not None:
            statistic.labels(test.test, test.variable).set(test.statistic)
        if test.p_value is not None:
            p_value.labels(test.test, test.variable).set(test.p_value)
        if test.effect is not None:
            effect.labels(test.test, test.variable, test.effect_name).set(test.effect)
        flagged.labels(test.test, test.variable).set(int(test.flagged))
    alert = gauge("alert", "1 when the alert fires", ("name",))
    for item in report.alerts:
        alert.labels(item.name).set(int(item.firing))
    return generate_latest(registry)
