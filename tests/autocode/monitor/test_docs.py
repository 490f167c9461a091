"""docs/monitoring.md documents every command, alert and drift setting, and every variable of
the dashboard (and nothing that does not exist)."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from autocode.monitor import dashboard
from autocode.monitor.alerts import AlertConfig
from autocode.monitor.cli import logs_app, monitor_app
from autocode.monitor.drift import DriftConfig

DOC = (Path(__file__).resolve().parents[3] / "docs" / "monitoring.md").read_text()


def test_every_command_is_documented() -> None:
    commands = {f"autocode logs {c.name}" for c in logs_app.registered_commands}
    commands |= {f"autocode monitor {c.name}" for c in monitor_app.registered_commands}
    documented = set(re.findall(r"^\| `(autocode (?:logs|monitor) [a-z-]+)", DOC, re.M))
    assert commands == documented


def test_every_setting_is_documented() -> None:
    settings = {f.name for f in fields(AlertConfig) if f.name != "drift_config"}
    settings |= {f"drift_tests.{f.name}" for f in fields(DriftConfig)}
    table = DOC[DOC.index("### Thresholds and their defaults") : DOC.index("```yaml")]
    documented = set(re.findall(r"^\| `([a-z_.0-9]+)` \| [^|]+ \|", table, re.M))
    assert settings == documented


def test_every_variable_of_the_dashboard_is_documented() -> None:
    source = Path(dashboard.__file__).read_text()
    used = set(re.findall(r"AUTOCODE_MONITOR_[A-Z_]+", source))
    assert {name for name in used if f"`{name}`" not in DOC} == set()
