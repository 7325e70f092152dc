"""The MLflow pyfunc of a TF-IDF baseline model: texts in, a label and its score out, the same
columns as a fine-tuned model's pyfunc, so `mlflow.pyfunc`, `mlflow models serve` and tuneloop's own
consumers treat both families alike.

MLflow copies this file into the model (`code/`) and imports it as `baseline_pyfunc` when the model
loads, so it imports nothing from tuneloop: a serving host needs only MLflow, scikit-learn and pandas.
"""

from __future__ import annotations

import pickle
from typing import Any


class BaselinePyfunc:
    """A pickled scikit-learn pipeline that answers like the fine-tune's pyfunc."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """A DataFrame with `label` (the most probable class) and `score` (its probability) per text."""
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            texts = data.iloc[:, 0]
        elif isinstance(data, str):
            texts = [data]
        else:
            texts = data
        texts = [str(text) for text in list(texts)]
        probabilities = self.pipeline.predict_proba(texts)
        best = probabilities.argmax(axis=1)
        return pd.DataFrame(
            {
                "label": [str(self.pipeline.classes_[index]) for index in best],
                "score": probabilities.max(axis=1).astype(float),
            }
        )


def _load_pyfunc(path: str) -> BaselinePyfunc:
    """MLflow's entry point: `path` is the model's folder (or its pickled pipeline, `model.pkl`)."""
    import os

    if os.path.isdir(path):
        path = os.path.join(path, "model.pkl")
    with open(path, "rb") as handle:
        return BaselinePyfunc(pickle.load(handle))  # the model's own file, as mlflow.sklearn loads it
