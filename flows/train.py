"""The `train` flow: the whole pipeline, from labelled text to split data (and, as the steps
land, a fine-tuned, evaluated and tracked model)."""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel

from flows.validate import check_data
from tasks.config import PipelineConfig
from tasks.split import SplitReport, split_dataset
from tasks.validate import DataReport
from tasks.workspace import create_run_folder


class TrainResult(BaseModel):
    """What one pipeline run produced."""

    folder: str
    data: DataReport
    splits: SplitReport


@flow(name="train")
def train(config: PipelineConfig = PipelineConfig()) -> TrainResult:  # noqa: B008
    """Run the pipeline on labelled text: load, validate (Great Expectations gate with quarantine),
    and split into stratified, leak-free train/validation/test sets."""
    folder = create_run_folder("train")
    data = check_data(config, folder)
    splits = split_dataset(data.data.clean, config.split, folder / "splits", data.test.clean if data.test else None)
    return TrainResult(folder=str(folder), data=data, splits=splits)
