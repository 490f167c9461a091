"""Monitoring of the prediction API: its log turned into Parquet, metrics, drift, alerts.

- `etl.compact`: JSON-lines segments (as the API ships them) → Parquet partitioned by date,
  idempotent and safe to kill (``autocode logs compact``);
- `query`: DuckDB metrics over a time window (volume, automatic coding, IC, latency, models);
- `levels`: predicted codes at each level of the nomenclature;
- `drift`: statistical tests between a reference and a current window;
- `alerts`: bounds on those numbers, as JSON and Prometheus metrics;
- `report` and `dashboard`: the same figures as a self-contained HTML file and as a Dash app;
- `replay`: real descriptions sent to a running API, with a controlled drift.

See docs/monitoring.md.
"""
