"""The `score` flow: label a file of texts with a registered model (batch scoring)."""

from __future__ import annotations

from prefect import flow

from tasks.config.score import ScoreConfig
from tasks.core.workspace import create_run_folder
from tasks.data.load import load_texts
from tasks.model.score import ScoreReport, check_output, score_texts
from tasks.registry.fetch import fetch_registered_model


@flow(name="score")
def score(
    config: ScoreConfig = ScoreConfig(),  # noqa: B008
) -> ScoreReport:
    """Label every text of a file with a registered model (default: the `champion` of
    tuneloop-classifier) and write the predictions (input id, label, score, model version) as
    Parquet or CSV. A Prefect table artifact shows how many texts got each label and how many
    scored below `low_confidence`. The model is fetched once per version into the home folder.

    Args:
        config: The model, the file to label (read as in training: path, format, text and id
            columns) and where the predictions go.
    """
    folder = create_run_folder("score")
    check_output(config, folder)
    texts = load_texts(config.data, folder / "texts.parquet")
    model_dir, version = fetch_registered_model(config.model)
    return score_texts(texts, model_dir, config.model, version, config, folder)
