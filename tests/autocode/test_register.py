"""The register variables' prior over codes (issue 17): the estimate itself on hand-made rows,
then real training on dev1000's descriptions of three divisions (read in place, never copied),
saved, loaded, and coded with and without the variables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from .test_calibration import config

CODES = ["4711A", "4711B", "4399C", "6920Z", "6820A"]


def ancestors(code: str) -> list[str]:
    return [code[:2], code[:3], code[:4]]


def test_the_prior_is_a_smoothed_ratio_along_the_hierarchy(tmp_path):
    """log p(v | c) / p(v), with p(v | node) = (n(v, node) + s·p(v | parent)) / (n(node) + s)
    from the root (add-one) down to the code; a code without rows borrows its parent's."""
    from autocode.model.register import CategoricalPrior

    prior = CategoricalPrior(["type_"], smoothing=2.0, power=1.0)
    prior.fit(
        {"type_": ["C", "C", "M", "X"]}, ["4711A", "4711B", "4399C", "6920Z"], CODES, ancestors
    )
    assert prior.values == {"type_": ["C", "M", "X"]}
    root = np.array([3, 2, 2]) / 7  # (counts + 1) / (4 + 3)

    def down(counts_per_level):
        p = root
        for counts in counts_per_level:
            n = np.asarray(counts, dtype=float)
            p = (n + 2.0 * p) / (n.sum() + 2.0)
        return p

    # 4711A: division 47 has C twice, group 471 and class 4711 too, subclass once
    expected = down([[2, 0, 0], [2, 0, 0], [2, 0, 0], [1, 0, 0]])
    factors = prior.log_factors({"type_": ["C", "M", "X"]}, 3)
    assert factors is not None
    np.testing.assert_allclose(factors[:, 0], np.log(expected / root), rtol=1e-5)
    # 6820A has no row, nor has its division: the root itself, ratio 1
    np.testing.assert_allclose(factors[:, 4], 0.0, atol=1e-6)
    assert factors[0, 0] > 0 > factors[1, 0]  # C backs a shop, M does not


def test_missing_and_unseen_values_have_no_effect_and_it_round_trips(tmp_path):
    from autocode.model.register import CategoricalPrior

    prior = CategoricalPrior(["type_", "cj"], smoothing=5.0, power=0.5)
    prior.fit(
        {"type_": ["C", None, "M", "X"], "cj": ["", "5710", "5710", "6540"]},
        ["4711A", "4711B", "4399C", "6920Z"],
        CODES,
        ancestors,
    )
    assert prior.values == {"type_": ["C", "M", "X"], "cj": ["5710", "6540"]}
    factors = prior.log_factors({"type_": [None, "Q", "C"], "cj": [None, "9999", None]}, 3)
    assert factors is not None
    np.testing.assert_allclose(factors[:2], 0.0)
    assert np.abs(factors[2]).max() > 0
    assert prior.log_factors({"nature": ["04"]}, 1) is None  # a variable it does not have
    # a large batch (factors per combination of values) gives each row what a small one does
    many = prior.log_factors({"type_": [None, "Q", "C"] * 10, "cj": [None, "9999", None] * 10}, 30)
    np.testing.assert_array_equal(many, np.tile(factors, (10, 1)))
    prior.save(tmp_path / "prior")
    loaded = CategoricalPrior.load(tmp_path / "prior")
    from_loaded = loaded.log_factors({"type_": ["M"], "cj": ["6540"]}, 1)
    from_saved = prior.log_factors({"type_": ["M"], "cj": ["6540"]}, 1)
    assert from_loaded is not None and from_saved is not None
    np.testing.assert_allclose(from_loaded, from_saved)
    with_missing = CategoricalPrior(["type_"], missing=True)
    with_missing.fit({"type_": ["C", None]}, ["4711A", "6920Z"], CODES, ancestors)
    assert with_missing.values == {"type_": ["C", "NaN"]}
    with pytest.raises(ValueError, match="smoothing must be > 0"):
        CategoricalPrior(["type_"], smoothing=0)


def test_a_bad_prior_config_is_refused():
    from autocode.train import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="unknown keys"):
        TrainConfig.from_dict({"categorical_prior": {"variabels": ["type_"]}})
    with pytest.raises(ConfigError, match="power must be"):
        TrainConfig.from_dict({"categorical_prior": {"power": -1}})
    with pytest.raises(ConfigError, match="a list of column names"):
        TrainConfig.from_dict({"categorical_prior": {"variables": "type_"}})
    assert TrainConfig.from_dict({"categorical_prior": None}).categorical_prior is None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The default config (prior on) on dev1000's rows of three divisions, saved as a pyfunc."""
    import dataclasses

    from autocode.train import train

    output = tmp_path_factory.mktemp("register") / "model"
    return train(dataclasses.replace(config(), output=str(output)))


def test_the_default_model_reads_the_register_variables(trained):
    """dev1000 has type_, nature, event and cj: the model reads them (only as its prior, not as
    tokens), the same text is coded differently with them, and a row without them is coded as
    the text alone says."""
    coder = trained.coder
    assert coder.categorical == ("type_", "nature", "event", "cj")
    assert coder.token_variables == ()
    prior = coder.classifier.prior
    assert prior is not None and set(prior.log_ratios) == {"type_", "nature", "event", "cj"}
    text = "Travaux de rénovation et location de biens"
    bare = coder.predict_proba(pd.DataFrame({"text": [text]}))
    builder = coder.predict_proba(
        pd.DataFrame({"text": [text], "type_": ["M"], "nature": ["14"], "event": ["01P"]})
    )
    landlord = coder.predict_proba(pd.DataFrame({"text": [text], "cj": ["6540"]}))
    classes = np.asarray(coder.classifier.classes)
    section = np.asarray([c[:2] for c in classes])
    assert builder[0, section == "43"].sum() > bare[0, section == "43"].sum()
    assert landlord[0, section == "68"].sum() > bare[0, section == "68"].sum()
    # no value given: exactly the text members (the prior has no effect)
    coder.classifier.prior = None
    try:
        np.testing.assert_allclose(coder.predict_proba(pd.DataFrame({"text": [text]})), bare)
    finally:
        coder.classifier.prior = prior


def test_the_saved_model_codes_with_and_without_the_variables(trained):
    """Through MLflow's pyfunc (the signature lists the variables as optional inputs) and the
    API's predictor: the same probabilities as the coder in memory."""
    import mlflow.pyfunc

    from autocode.model import load_coder
    from autocode.serve.predictor import Predictor

    rows = pd.DataFrame(
        {
            "text": ["Maçonnerie générale", "Location de logements meublés"],
            "type_": ["M", "X"],
            "nature": ["14", None],
            "event": ["01P", "01M"],
            "cj": [None, "6540"],
        }
    )
    expected = trained.coder.predict(rows)
    pyfunc = mlflow.pyfunc.load_model(str(trained.output))
    coded = pyfunc.predict(rows)
    assert coded["code_1"].tolist() == expected["code_1"].tolist()
    np.testing.assert_allclose(coded["ic"], expected["ic"], atol=1e-6)
    text_only = pyfunc.predict(rows[["text"]])
    assert len(text_only) == 2
    loaded = load_coder(str(trained.output))
    predictor = Predictor(loaded)
    proba = predictor.proba(rows["text"].tolist(), {"type_": ["M", "X"], "cj": [None, "6540"]})
    same = trained.coder.predict_proba(rows[["text", "type_", "cj"]])
    np.testing.assert_allclose(proba, same, atol=1e-6)
    assert not predictor.unknown_value("cj", "9999")  # the prior ignores unseen values
    saved = json.loads((trained.output / "artifacts" / "coder" / "coder.json").read_text())
    assert saved["classifier"]["prior"] == ["type_", "nature", "event", "cj"]
