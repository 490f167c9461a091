"""Champion against challenger on gold rows neither was trained on, and the promotion decision.

Evidence:
- **McNemar's exact test** on the paired top-1 outcomes: of the rows where the two models
  disagree in correctness, ``n10`` the champion alone got right, ``n01`` the challenger alone;
  under "equally accurate" n01 ~ Binomial(n10 + n01, 1/2) (`scipy.stats.binomtest`).
- **Accuracy** of each, and of the difference, weighted by the gold rows' sampling weights when
  they have them (estimates for the traffic, design-based intervals; `autocode.evaluate`).
- **The business metric**: the automatic-coding rate at the target accuracy (the largest
  weighted share of rows that can be coded automatically with that accuracy), of each model,
  and a paired bootstrap of the difference (rows redrawn within strata, the same rows for both).

Rules (``rule``), at level ``alpha`` (one-sided):
- ``not-worse``: promote unless the challenger is shown less accurate (McNemar, champion better
  at p < alpha) or shown to code fewer rows automatically at the target (the bootstrap's upper
  bound of the difference below 0).
- ``better``: promote only when the challenger is shown more accurate (McNemar, challenger
  better at p < alpha) and not shown to code fewer rows automatically.

With too few rows neither model was trained on (``min_rows``) the comparison is refused. The
decision and its evidence are recorded in MLflow (a run in ``<model>-promotions``: params,
metrics, ``decision.json``; tags on both versions) before any alias moves; on refusal or on
any failure ``@champion`` is untouched."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autocode import data as datamod
from autocode.errors import UserError
from autocode.evaluate import (
    INTERVAL,
    SampleDesign,
    evaluate_predictions,
    largest_coverage,
    ratio_estimate,
)
from autocode.loop.gold import KEY, design_of, read_gold
from autocode.loop.tracking import check_reachable, client, tracking_uri, trained_keys

RULES = ("not-worse", "better")
DEFAULT_MIN_ROWS = 30
BOOTSTRAP_SAMPLES = 1000
PREVIOUS = "previous-champion"  # the alias the replaced champion keeps (rollback: promote it)


class CompareError(UserError, RuntimeError):
    """The comparison could not be made; no alias was changed."""


@dataclass
class Decision:
    model: str
    champion: str | None  # versions
    challenger: str
    promote: bool
    reason: str
    rule: str
    evidence: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    promoted: bool = False  # the alias was moved (promote requested and decided)

    def outcome(self) -> dict[str, Any]:
        """The decision in a report's JSON: what was decided, whether the alias moved, why."""
        return {
            "decision": "promote" if self.promote else "keep",
            "promoted": self.promoted,
            "reason": self.reason,
            "champion": self.champion,
            "challenger": self.challenger,
            "run_id": self.run_id,
        }

    def summary(self) -> str:
        verdict = "promote" if self.promote else "keep the champion"
        against = f"version {self.champion}" if self.champion else "no champion"
        return (
            f"{self.model}: challenger version {self.challenger} vs {against}: {verdict} "
            f"({self.rule}): {self.reason}"
        )


def mcnemar(champion_right: np.ndarray, challenger_right: np.ndarray) -> dict[str, float]:
    """The exact McNemar test of two paired sets of outcomes (see the module's doc)."""
    from scipy.stats import binomtest

    a = np.asarray(champion_right, dtype=bool)
    b = np.asarray(challenger_right, dtype=bool)
    n10 = int((a & ~b).sum())
    n01 = int((~a & b).sum())
    n = n10 + n01
    if n == 0:
        return {"n10": 0, "n01": 0, "p_two_sided": 1.0, "p_challenger_better": 1.0,
                "p_challenger_worse": 1.0}  # fmt: skip
    return {
        "n10": n10,
        "n01": n01,
        "p_two_sided": float(binomtest(n01, n, 0.5).pvalue),
        "p_challenger_better": float(binomtest(n01, n, 0.5, alternative="greater").pvalue),
        "p_challenger_worse": float(binomtest(n10, n, 0.5, alternative="greater").pvalue),
    }


def paired_coverage(
    ic_a: np.ndarray,
    right_a: np.ndarray,
    ic_b: np.ndarray,
    right_b: np.ndarray,
    target: float,
    design: SampleDesign,
    alpha: float,
    samples: int = BOOTSTRAP_SAMPLES,
) -> dict[str, float]:
    """Each model's automatic-coding rate at ``target`` (weighted), their difference (b − a),
    its ``INTERVAL`` percentile interval and its one-sided (1 − alpha) bounds, from a paired
    bootstrap: rows redrawn within strata (rows taken with certainty kept), the same rows for
    both models (seeded)."""
    w = design.weights
    cov_a, thr_a = largest_coverage(ic_a, right_a, target, weights=w)
    cov_b, thr_b = largest_coverage(ic_b, right_b, target, weights=w)
    rng = np.random.default_rng(0)
    kept = np.flatnonzero(design.certain)
    groups = [
        np.flatnonzero(~design.certain & (design.strata == s))
        for s in np.unique(design.strata[~design.certain])
    ]
    diffs = np.empty(samples)
    for i in range(samples):
        rows = np.concatenate([kept, *(rng.choice(g, len(g)) for g in groups)])
        a = largest_coverage(ic_a[rows], right_a[rows], target, weights=w[rows])[0]
        b = largest_coverage(ic_b[rows], right_b[rows], target, weights=w[rows])[0]
        diffs[i] = b - a
    tail = (1 - INTERVAL) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    lower, upper = np.percentile(diffs, [alpha * 100, 100 - alpha * 100])
    return {
        "coverage_champion": cov_a,
        "threshold_champion": thr_a,
        "coverage_challenger": cov_b,
        "threshold_challenger": thr_b,
        "delta_coverage": cov_b - cov_a,
        "delta_coverage_low": float(low),
        "delta_coverage_high": float(high),
        "delta_coverage_lower_bound": float(lower),
        "delta_coverage_upper_bound": float(upper),
    }


def paired_accuracy(right_a: np.ndarray, right_b: np.ndarray, design: SampleDesign) -> dict:
    """The (weighted) difference of accuracy b − a and its normal ``INTERVAL`` interval from
    the linearised design variance (`autocode.evaluate.ratio_estimate`)."""
    from scipy.stats import norm

    y = np.asarray(right_b, dtype=float) - np.asarray(right_a, dtype=float)
    delta, variance = ratio_estimate(y, np.ones(len(y)), design)
    half = float(norm.ppf(0.5 + INTERVAL / 2)) * float(np.sqrt(max(variance, 0.0)))
    return {"delta_accuracy": delta, "delta_accuracy_low": delta - half,
            "delta_accuracy_high": delta + half}  # fmt: skip


def decide(rule: str, alpha: float, test: dict[str, float], coverage: dict[str, float]):
    """(promote, reason) under ``rule`` (see the module's doc)."""
    n10, n01 = int(test["n10"]), int(test["n01"])
    counts = f"champion alone right on {n10} rows, challenger alone on {n01}"
    fewer_auto = coverage["delta_coverage_upper_bound"] < 0
    auto = (
        f"automatic-coding rate at the target {coverage['coverage_champion']:.3f} → "
        f"{coverage['coverage_challenger']:.3f}"
    )
    if rule == "not-worse":
        if test["p_challenger_worse"] < alpha:
            p = test["p_challenger_worse"]
            return False, f"the challenger is less accurate ({counts}; McNemar p={p:.4f} < {alpha})"
        if fewer_auto:
            return (
                False,
                f"the challenger codes fewer rows automatically ({auto}, shown at {alpha})",
            )
        p = test["p_challenger_worse"]
        return True, f"not shown worse ({counts}; McNemar p={p:.4f}; {auto})"
    if test["p_challenger_better"] >= alpha:
        p = test["p_challenger_better"]
        return False, f"the challenger is not shown more accurate ({counts}; McNemar p={p:.4f})"
    if fewer_auto:
        return False, f"more accurate, but codes fewer rows automatically ({auto})"
    p = test["p_challenger_better"]
    return True, f"more accurate ({counts}; McNemar p={p:.4f}; {auto})"


def _version(mlflow_client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def compare(
    name: str,
    gold_uris: Sequence[str],
    *,
    uri: str | None = None,
    rule: str = "not-worse",
    alpha: float = 0.05,
    target_accuracy: float = 0.90,
    min_rows: int = DEFAULT_MIN_ROWS,
    champion_alias: str = "champion",
    challenger_alias: str = "challenger",
    promote: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Decision:
    """Compare ``@challenger`` with ``@champion`` on the gold rows neither was trained on,
    record the decision in MLflow and, with ``promote``, move ``@champion`` when the rule says
    so (the replaced version keeps ``@previous-champion``)."""
    from autocode.model import load_coder

    step = progress or (lambda message: None)
    if rule not in RULES:
        raise CompareError(f"rule {rule!r}: choose from {', '.join(RULES)}")
    if not 0 < alpha < 0.5:
        raise CompareError(f"alpha {alpha}: a level between 0 and 0.5 (e.g. 0.05)")
    if not 0 < target_accuracy < 1:
        raise CompareError(f"target accuracy {target_accuracy}: between 0 and 1 (e.g. 0.9)")
    uri = tracking_uri(uri)
    check_reachable(uri)
    mlflow_client = client(uri)
    challenger = _version(mlflow_client, name, challenger_alias)
    if challenger is None:
        raise CompareError(
            f"model {name!r} has no @{challenger_alias} (run `autocode retrain` first); "
            "nothing was changed"
        )
    champion = _version(mlflow_client, name, champion_alias)
    params = {"model": name, "rule": rule, "alpha": alpha, "target_accuracy": target_accuracy,
              "min_rows": min_rows, "challenger_version": challenger.version,
              "champion_version": champion.version if champion else "none",
              "gold": json.dumps(list(gold_uris))}  # fmt: skip
    if champion is None:
        decision = Decision(name, None, challenger.version, True, "no champion yet", rule,
                            {"params": params})  # fmt: skip
    elif champion.version == challenger.version:
        raise CompareError(
            f"@{challenger_alias} is @{champion_alias} already (version {champion.version}): "
            "nothing to compare"
        )
    else:
        decision = _compare(
            mlflow_client, name, champion, challenger, gold_uris, rule, alpha,
            target_accuracy, min_rows, params, step, load_coder,
        )  # fmt: skip
    step(decision.summary())
    _record(mlflow_client, uri, decision, champion, challenger)
    if promote and decision.promote:
        if champion is not None:
            mlflow_client.set_registered_model_alias(name, PREVIOUS, champion.version)
        mlflow_client.set_registered_model_alias(name, champion_alias, challenger.version)
        decision.promoted = True
    return decision


def _compare(mlflow_client, name, champion, challenger, gold_uris, rule, alpha, target,
             min_rows, params, step, load_coder) -> Decision:  # fmt: skip
    step(f"loading champion version {champion.version} and challenger {challenger.version}")
    champ = load_coder(f"models:/{name}/{champion.version}")
    chall = load_coder(f"models:/{name}/{challenger.version}")
    a_nom, b_nom = champ.nomenclature, chall.nomenclature
    if (a_nom.name, a_nom.version) != (b_nom.name, b_nom.version):
        raise CompareError(
            f"champion codes {a_nom.name} {a_nom.version}, challenger {b_nom.name} "
            f"{b_nom.version}: not comparable on one gold standard"
        )
    categorical = list(dict.fromkeys([*champ.categorical, *chall.categorical]))
    gold = read_gold(gold_uris, a_nom, categorical)
    step(gold.summary())
    seen_a = trained_keys(mlflow_client, champion.run_id)
    seen_b = trained_keys(mlflow_client, challenger.run_id)
    seen = (seen_a or set()) | (seen_b or set())
    rows = gold.rows[~gold.rows[KEY].isin(seen)].reset_index(drop=True)
    evidence: dict[str, Any] = {
        "params": params,
        "gold": {"files": gold.files, "left_out": gold.left_out, "rows": len(gold.rows)},
        "rows_compared": len(rows),
        "rows_trained_on": int(gold.rows[KEY].isin(seen).sum()),
        "champion_records_gold": seen_a is not None,
        "challenger_records_gold": seen_b is not None,
    }
    if len(rows) < min_rows:
        raise CompareError(
            f"only {len(rows)} gold rows neither model was trained on (of {len(gold.rows)}; "
            f"at least {min_rows} needed): annotate more, or retrain with a larger --holdout; "
            "the champion is unchanged"
        )
    truth = rows[datamod.CODE].tolist()
    design = design_of(rows)
    weighted = design is not None
    design = design or SampleDesign.of(np.ones(len(rows)))
    results = {}
    outcomes = {}
    for role, coder in (("champion", champ), ("challenger", chall)):
        step(f"coding {len(rows)} gold rows with the {role}")
        predictions = coder.predict(rows, k=max(5, coder.k))
        evaluation = evaluate_predictions(predictions, truth, a_nom, design if weighted else None)
        results[role] = evaluation.metrics
        outcomes[role] = (
            predictions["ic"].to_numpy(dtype=float),
            predictions["code_1"].to_numpy() == np.asarray(truth),
        )
    (ic_a, right_a), (ic_b, right_b) = outcomes["champion"], outcomes["challenger"]
    test = mcnemar(right_a, right_b)
    coverage = paired_coverage(ic_a, right_a, ic_b, right_b, target, design, alpha)
    accuracy = paired_accuracy(right_a, right_b, design)
    promote, reason = decide(rule, alpha, test, coverage)
    evidence.update(
        {
            "weighted": weighted,
            "mcnemar": test,
            "accuracy": accuracy,
            "automatic_coding": coverage,
            "champion_metrics": _finite(results["champion"]),
            "challenger_metrics": _finite(results["challenger"]),
            "compared_keys": sorted(set(rows[KEY])),
        }
    )
    return Decision(name, champion.version, challenger.version, promote, reason, rule, evidence)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if np.isfinite(v)}


def _record(mlflow_client, uri: str, decision: Decision, champion, challenger) -> None:
    """A run in ``<model>-promotions`` with the decision and its evidence, and tags on both
    versions. Raised errors leave the aliases as they are (they move after this)."""
    evidence = decision.evidence
    metrics: dict[str, float] = {"promote": float(decision.promote)}
    if "mcnemar" in evidence:
        metrics.update({f"mcnemar_{k}": float(v) for k, v in evidence["mcnemar"].items()})
        metrics.update({k: float(v) for k, v in evidence["accuracy"].items()})
        metrics.update({k: float(v) for k, v in evidence["automatic_coding"].items()})
        metrics["rows_compared"] = float(evidence["rows_compared"])
        for role in ("champion", "challenger"):
            for key in ("accuracy", "accuracy_low", "accuracy_high", "auto_rate", "auto_accuracy"):
                if key in evidence[f"{role}_metrics"]:
                    metrics[f"{role}_{key}"] = evidence[f"{role}_metrics"][key]
    record = {"decision": "promote" if decision.promote else "keep", "reason": decision.reason,
              **evidence}  # fmt: skip
    try:
        experiment = f"{decision.model}-promotions"
        found = mlflow_client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id if found else mlflow_client.create_experiment(experiment)
        )
        run = mlflow_client.create_run(
            experiment_id,
            run_name=f"v{decision.champion or '-'} vs v{decision.challenger}",
            tags={"decision": record["decision"], "model": decision.model},
        )
        run_id = run.info.run_id
        for key, value in evidence.get("params", {}).items():
            mlflow_client.log_param(run_id, key, str(value)[:500])
        for key, value in metrics.items():
            if np.isfinite(value):
                mlflow_client.log_metric(run_id, key, value)
        mlflow_client.log_dict(run_id, record, "decision.json")
        mlflow_client.set_tag(run_id, "reason", decision.reason[:5000])
        mlflow_client.set_terminated(run_id)
        tags = {"promotion.decision": record["decision"], "promotion.run_id": run_id,
                "promotion.reason": decision.reason[:5000],
                "promotion.against": str(decision.champion or "none")}  # fmt: skip
        for key, value in tags.items():
            mlflow_client.set_model_version_tag(decision.model, challenger.version, key, value)
        if champion is not None:
            mlflow_client.set_model_version_tag(
                decision.model, champion.version, "promotion.last_challenge",
                f"version {challenger.version}: {record['decision']} (run {run_id})",
            )  # fmt: skip
    except Exception as exc:
        raise CompareError(
            f"the decision could not be recorded in MLflow at {uri} ({exc}); the champion is "
            "unchanged"
        ) from exc
    decision.run_id = run_id
