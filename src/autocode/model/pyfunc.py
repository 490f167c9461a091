"""The MLflow model interface. Not imported by `autocode.model` itself (`packaging` imports it
when it saves a model), so that importing `autocode.model` stays light."""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel  # (mlflow.pyfunc.PythonModel: mypy sees a LazyLoader)

from autocode.model.coder import Coder


class AutocodeModel(PythonModel):
    """Raw rows in (a ``text`` column and the model's categorical columns), coded rows out.

    Params: ``k`` (number of codes returned) and ``threshold`` (the IC from which ``auto`` is
    true). Artifacts are loaded once, in `load_context`.
    """

    def load_context(self, context: Any) -> None:
        self.coder = Coder.load(context.artifacts["coder"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        params = params or {}
        return self.coder.predict(model_input, params.get("k"), params.get("threshold"))
