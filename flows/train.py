"""The `train` flow: the whole pipeline, from labelled text to a fine-tuned, evaluated, tracked model."""

from __future__ import annotations

from prefect import flow, get_run_logger
from pydantic import BaseModel, computed_field

from flows.promote import champion_challenger
from flows.validate import check_data
from tasks.config.pipeline import PipelineConfig
from tasks.core.gpus import one_gpu
from tasks.core.workspace import finish_run_folder, open_run_folder, run_failed, run_interrupted
from tasks.data.load import source_stamps
from tasks.data.split import SplitReport, split_dataset
from tasks.data.validate import DataReport
from tasks.model.baseline import BaselineReport, FamilyChoice, baseline_verdict, choose_model_family, fit_baseline
from tasks.model.evaluate import EvalReport, check_model_quality, evaluate_model
from tasks.model.finetune import TrainedModelRef, finetune_model
from tasks.model.select import SelectionReport, select_base_model
from tasks.registry.promotion import run_candidate
from tasks.registry.versions import PromotionResult
from tasks.tracking.live import mark_failed, mark_killed, metric_sender, open_training_run
from tasks.tracking.store import TrackedRun, check_tracking, readable_run_name, run_link
from tasks.tracking.training import log_run


class TrainResult(BaseModel):
    """What one pipeline run produced."""

    folder: str
    data: DataReport
    splits: SplitReport
    selection: SelectionReport
    baseline: BaselineReport
    model: TrainedModelRef
    evaluation: EvalReport
    tracking: TrackedRun
    family: FamilyChoice | None = None
    promotion: PromotionResult | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def verdict(self) -> str:
        """Whether the fine-tuned model beats the classical baseline, in words."""
        return baseline_verdict(self.evaluation.val, self.baseline, self.selection.metric)


@flow(
    name="train",
    on_failure=[mark_failed, run_failed],
    on_crashed=[mark_failed, run_interrupted],
    on_cancellation=[mark_killed, run_interrupted],
)
def train(
    config: PipelineConfig = PipelineConfig(),  # noqa: B008
    fresh: bool = False,
) -> TrainResult:
    """Fine-tune a pre-trained Hugging Face model on labelled text: validate the data (Great Expectations
    gate with quarantine), split it leak-free, fit a TF-IDF baseline, choose the base model (screen
    license, task fit and size; probe the survivors), fine-tune (full or LoRA, on a GPU when present:
    one that no other run or trial on the host holds; until validation stops improving) into an MLflow
    run that is live while it trains (RUNNING, each epoch's scores as they happen; FAILED with the error
    when the flow run fails), evaluate on validation and test, log the rest and the model as an MLflow
    Model, register it (or the TF-IDF baseline, logged as an MLflow Model too, when that is better on
    validation beyond noise) as a new version (alias `candidate`) and promote it to `champion` when a
    paired test on the same test split says it is better (`promotion.mode`: auto, after an approval
    form, or never).
    The defaults run on the bundled sample.

    A run whose process died before it finished (killed, out of memory, crashed, cancelled) is
    continued by the next run of the same settings and data on the same host: same run folder, same
    MLflow run, training from its last checkpoint (a retry of the same flow run does the same).

    Args:
        config: Every setting of the run, grouped by step; each has a default. Paths are relative
            to the deployment's working directory; endpoints and secrets come from the worker's
            environment, never from this form.
        fresh: Start a new run even when an unfinished run of the same settings and data could be
            continued.
    """
    with one_gpu(get_run_logger(), config.train.device):  # before any CUDA call
        folder = open_run_folder("train", config, source_stamps(config.data), fresh)
        target = check_tracking(config.tracking)
        data = check_data(config, folder)
        clean, test = data.clean_tables()
        splits = split_dataset(clean, config.split, folder / "splits", test)
        baseline = fit_baseline(splits, config.split.seed, folder / "baseline")
        selection = select_base_model(config.model, config.train, config.eval, splits, folder / "selection")
        name = readable_run_name("train", config.data.path, selection.chosen.base_model)
        run = open_training_run(target, config.tracking, data.data.dataset_sha256, folder, name)  # RUNNING from now on
        trained = finetune_model(
            splits,
            selection.chosen,
            config.train,
            config.eval,
            folder,
            config.model.trust_remote_code,
            metric_sender(run),
            config.tracking.outage_grace_seconds,
            config.tracking.loss_every_steps,
        )
        evaluation = evaluate_model(
            trained.path,
            splits.validation.path,
            splits.test.path,
            config.eval,
            folder / "evaluation",
            trained.validation_predictions,
        )
        tracked = log_run(target, run, config, data, splits, trained, evaluation, selection, baseline)
        check_model_quality(evaluation, config.eval)
        family = choose_model_family(
            str(evaluation.val_predictions_path), baseline, config.promotion, evaluation.val_scored_by
        )
        promotion = None
        if config.promotion.register_model:  # only a run that passed every gate gets here
            candidate = run_candidate(tracked, evaluation, baseline, family, trained)
            link = run_link(target, candidate.run_id)
            promotion = champion_challenger(
                target.uri,
                config.promotion,
                candidate,
                splits.test.path,
                config.eval.batch_size,
                folder / "promotion",
                tags={
                    "dataset_sha256": data.data.dataset_sha256,
                    "mlflow_run": link,
                },
                links={"candidate run": link},
            )
        finish_run_folder(folder, config.train.keep_checkpoints)
        return TrainResult(
            folder=str(folder),
            data=data,
            splits=splits,
            selection=selection,
            baseline=baseline,
            model=trained,
            evaluation=evaluation,
            tracking=tracked,
            family=family,
            promotion=promotion,
        )
