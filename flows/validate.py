"""The `validate-data` flow: is this labelled text fit to train on?"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from tasks.config.pipeline import PipelineConfig
from tasks.core.workspace import create_run_folder
from tasks.data.load import load_dataset
from tasks.data.validate import DataReport, check_test_labels, validate_dataset


def check_data(config: PipelineConfig, folder: Path) -> DataReport:
    """Load and validate the data, and the separate test set when one is configured."""
    dataset = load_dataset(config.data.path, config.data, folder / "data.parquet")
    report = validate_dataset(dataset, config.data.path, config.validation, config.data, folder / "validation")
    if not config.data.test_path:
        return DataReport(data=report)
    test = load_dataset(config.data.test_path, config.data, folder / "test-data.parquet")
    test_report = validate_dataset(
        test, config.data.test_path, config.validation, config.data, folder / "validation-test"
    )
    return DataReport(data=report, test=check_test_labels(report, test_report, config.validation))


@flow(name="validate-data")
def validate_data(
    config: PipelineConfig = PipelineConfig(),  # noqa: B008
) -> DataReport:
    """Load labelled text and check it against the dataset contract (Great Expectations).

    Rows that can be isolated (blank or overlong text, missing or unknown label, one text with two
    labels) are quarantined with their reason; the run stops with every failed check listed when a
    blocking check fails or too many rows are quarantined. A JSON summary, the quarantine file and
    Great Expectations Data Docs are written to the run folder.

    Args:
        config: Every setting of the run, grouped by step; each has a default. Paths are relative
            to the deployment's working directory; endpoints and secrets come from the worker's
            environment, never from this form.
    """
    folder = create_run_folder("validate")
    return check_data(config, folder)
