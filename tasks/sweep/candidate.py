"""The sweep's candidate: its best trial's model, or that trial's configuration refit on train +
validation for the epochs the trial chose (tasks/model/refit.py), when the trials were
cross-validated (no trial keeps a model of its own) or train.refit says so for the validation split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.config.pipeline import SweepPipelineConfig
from tasks.config.sweep import SweepConfig
from tasks.model.finetune import FirstFit, prepare, refit
from tasks.model.plan import EpochRecord, TrainingPlan
from tasks.model.predict import model_info
from tasks.model.refit import RefitReport, refit_decision
from tasks.registry.versions import Candidate
from tasks.sweep.state import BestModel, RoundDecision, SweepState, TrialResult
from tasks.sweep.trial import model_for_round


def candidate_decision(pipeline: SweepPipelineConfig, state: SweepState, best: TrialResult) -> RefitReport:
    """Whether the candidate is the best trial refit on train + validation, and why. A trial recorded
    before trials chose their epoch (no best_epoch) keeps its own model."""
    if best.best_epoch is None or best.plan is None:
        return RefitReport(refit=False, reason="the best trial records no chosen epoch to refit for.")
    if best.folds:
        return RefitReport(
            refit=True,
            reason=f"the trials were scored by {best.folds}-fold cross-validation, which keeps no model of its own.",
        )
    return refit_decision(pipeline.train.refit, state.splits.validation.rows)


def first_fit_of_trial(best: TrialResult) -> FirstFit:
    """What the best trial found, as a first fit the refit continues from."""
    assert best.best_epoch is not None and best.plan is not None
    return FirstFit(
        history=[EpochRecord.model_validate(record) for record in best.history],
        best_epoch=best.best_epoch,
        plan=TrainingPlan.model_validate(best.plan),
        resumed_from=None,
        seconds=best.seconds,
        trainable_parameters=0,
        total_parameters=0,
    )


def refit_candidate(
    pipeline: SweepPipelineConfig, state: SweepState, best: TrialResult, decision: RefitReport, log: Any
) -> tuple[Path, RefitReport]:
    """Train the best trial's configuration again on train + validation for its chosen epochs, into
    `<sweep folder>/candidate/model` (a rerun resumes from the refit's checkpoints); the folder and
    the refit's report."""
    import shutil

    train = pipeline.train.model_copy(update=best.params)
    model = model_for_round(pipeline.sweep, state, best.round)
    fitting, frames = prepare(state.splits, model, train, pipeline.sweep.metric, pipeline.model.trust_remote_code, log)
    folder = Path(state.folder) / "candidate"
    folder.mkdir(parents=True, exist_ok=True)
    report = refit(fitting, frames, first_fit_of_trial(best), decision, folder, [])
    shutil.rmtree(folder / "refit", ignore_errors=True)  # its checkpoints: the model is saved
    return folder / "model", report


def sweep_candidate(best: BestModel, state: SweepState, decision: RoundDecision, settings: SweepConfig) -> Candidate:
    """What a sweep offers the registry: its candidate model, blocked from promotion unless the sweep
    met its target (a sweep whose budget ran out first only registers)."""
    info = model_info(Path(best.model_path))
    blocked = None
    if decision.action != "target_met":
        reached = f"{decision.best_score:.4f}" if decision.best_score is not None else "no score"
        blocked = (
            f"the sweep did not reach its target (best validation {settings.metric} {reached} < target_f1 "
            f"{settings.target_f1}), so its candidate is registered only"
        )
    return Candidate(
        family="finetune",
        base_model=str(info.get("base_model", state.model.base_model if state.model else "")),
        method=str(info.get("method", "")),
        run_id=best.run_id,
        model_id=best.model_id,
        test=best.evaluation.test,
        test_predictions=best.evaluation.predictions_path,
        blocked=blocked,
    )
