"""The sweep's candidate: its best trial's model, or that trial's configuration refit on train +
validation for the epochs the trial chose (tasks/model/refit.py), when the trials were
cross-validated (no trial keeps a model of its own) or train.refit says so for the validation split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task

from tasks.config.pipeline import SweepPipelineConfig
from tasks.config.sweep import SweepConfig
from tasks.core.metrics import split_metrics
from tasks.model.baseline import BaselineReport, FamilyChoice, choose_family, fit_tfidf_baseline, held_out_baseline
from tasks.model.finetune import FirstFit, prepare, refit
from tasks.model.plan import EpochRecord, TrainingPlan
from tasks.model.predict import model_info
from tasks.model.refit import RefitReport, refit_decision
from tasks.registry.promotion import baseline_offer
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


@task(name="compete_with_baseline")
def compete_with_baseline(
    pipeline: SweepPipelineConfig, state: SweepState, best: BestModel
) -> tuple[BaselineReport | None, FamilyChoice]:
    """The TF-IDF baseline against the sweep's best trial on the rows that trial was judged on, held
    out for both: the validation split, or out of fold on the trials' own folds (cross-validated
    trials). Returns the baseline, fit on the rows the candidate was (train, plus validation when the
    candidate was refit), saved in `<sweep folder>/baseline` with its held-out validation scores
    (None when `promotion.baseline_competes` is off or the trial's predictions do not pair with it),
    and the family offered (choose_family: the baseline when it is better beyond noise)."""
    log = get_run_logger()
    if not pipeline.promotion.baseline_competes or best.trial.predictions is None:
        return None, FamilyChoice(family="finetune", difference=None, reason="the baseline does not compete")
    train, validation, test = (
        pd.read_parquet(ref.path) for ref in (state.splits.train, state.splits.validation, state.splits.test)
    )
    folds, seed = best.trial.folds, pipeline.train.model_copy(update=best.trial.params).seed
    ours = pd.read_parquet(best.trial.predictions, columns=["label", "predicted"]).astype(str)
    pool = pd.concat([train, validation], ignore_index=True)
    rows = pool if folds else validation
    if ours["label"].tolist() != rows["label"].astype(str).tolist():  # a trial recorded by an older tuneloop
        log.warning("The best trial's held-out predictions are not in the split's row order: no baseline competes.")
        return None, FamilyChoice(family="finetune", difference=None, reason="the baseline could not be paired")
    theirs = held_out_baseline(train, validation, folds, seed)
    scored_by = f"{folds}-fold out of fold, train + validation" if folds else "held out"
    family = choose_family(ours["label"].tolist(), ours["predicted"].tolist(), theirs, pipeline.promotion, scored_by)
    log.info("Model family: %s", family.reason)
    fitted_on = pool if best.refit.refit else train  # the rows the candidate was trained on
    report = fit_tfidf_baseline(fitted_on, validation, test, seed, Path(state.folder) / "baseline")
    held_out = split_metrics(ours["label"].tolist(), theirs, sorted(train["label"].astype(str).unique()))
    rows.assign(predicted=theirs).to_csv(str(report.val_predictions_path), index=False)
    return report.model_copy(update={"val": held_out}), family


def baseline_candidate(baseline: BaselineReport, run_id: str, model_id: str | None, settings: SweepConfig) -> Candidate:
    """The baseline as a sweep's candidate: blocked from promotion unless its held-out score reaches
    the sweep's target, as a fine-tune's would have to."""
    score = getattr(baseline.val, settings.metric)
    blocked = None
    if score < settings.target_f1:
        blocked = (
            f"the {baseline.name} baseline did not reach the sweep's target (held-out {settings.metric} "
            f"{score:.4f} < target_f1 {settings.target_f1}), so it is registered only"
        )
    return baseline_offer(baseline, run_id, model_id, blocked)


def sweep_candidate(best: BestModel, state: SweepState, decision: RoundDecision, settings: SweepConfig) -> Candidate:
    """What a sweep offers the registry: its candidate model, blocked from promotion unless the sweep
    met its target (a sweep whose budget ran out first only registers) and, when the baseline
    competed, unless it scores at least as well as the baseline."""
    info = model_info(Path(best.model_path))
    blocked = best.family.blocked if best.family else None
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
