"""One trial, in whichever process runs its flow run: fine-tune the configuration the round asked
the study for, with per-epoch pruning on the validation score (on a GPU, holding the GPU
concurrency limit) and a heartbeat in the study, and tell the study the outcome."""

from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from tasks.config.eval import EvalConfig
from tasks.config.sweep import SweepConfig
from tasks.config.train import TrainConfig
from tasks.model.plan import EpochRecord, TrainingPlan
from tasks.model.resolve import ModelRef
from tasks.sweep.record import heartbeat, trial_id, trial_result
from tasks.sweep.rounds import scored_rows, trial_folds
from tasks.sweep.search import open_study
from tasks.sweep.state import SweepState, TrialResult


def gpu_limit_problem(name: str) -> str | None:
    """Why the Prefect global concurrency limit `name` cannot hold trials (missing or inactive), or None."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    fix = f"create it (`prefect gcl create {name} --limit 1`: one trial per GPU) or unset sweep.gpu_concurrency_limit"
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return f"sweep.gpu_concurrency_limit={name!r}: the Prefect server has no such concurrency limit; {fix}."
    if not limit.active:
        return f"sweep.gpu_concurrency_limit={name!r} is inactive, so it limits nothing; activate it or {fix}."
    return None


def trains_on_gpu(train: TrainConfig) -> bool:
    """Whether trials with this train section run on a CUDA GPU (train.device, or auto on a GPU
    machine); refuses a device or precision this machine lacks. Leaves the CUDA driver unstarted."""
    from tasks.model.plan import training_device

    return training_device(train) == "cuda"


def gpu_slot(config: SweepConfig, on_gpu: bool) -> AbstractContextManager:
    """What a trial holds while it trains: on a GPU, one slot of the configured Prefect global
    concurrency limit (strict: a missing limit is an error, not a free pass); otherwise nothing."""
    if config.gpu_concurrency_limit and on_gpu:
        from prefect.concurrency.sync import concurrency

        return concurrency(config.gpu_concurrency_limit, occupy=1, strict=True)
    return nullcontext()


# Set when a local round is interrupted (Ctrl-C, SIGTERM) while its trial trains in a thread of the
# same process: the trial stops at its next step instead of training to its end first.
INTERRUPTED = threading.Event()


class TrialInterrupted(BaseException):
    """Raised inside a trial's training when its round was interrupted. Not a failure of the trial:
    the study is not told, its heartbeat stops, and `--continue` retries it from its checkpoint."""


class Judge:
    """Reports each epoch's validation score of a trial to Optuna and raises optuna.TrialPruned when
    the pruner says so, once the trial has made `min_steps` optimizer steps after its warmup (the
    pruner's own minimum epoch applies too). A trial at its last epoch is never pruned: stopping
    saves nothing, and the study learns more from a finished trial (and keeps its model) than from a
    pruned one. Keeps the scores it heard: a pruned trial's training never returns them."""

    def __init__(self, trial: Any, metric: str, min_steps: int = 0) -> None:
        self.trial, self.metric, self.min_steps = trial, metric, min_steps
        self.history: list[dict[str, Any]] = []

    def epoch(self, epoch: int, scores: dict[str, float], steps: int, warmup_steps: int, planned: int) -> None:
        """Epoch `epoch` ended after `steps` optimizer steps of `planned` epochs, with these scores."""
        import optuna

        score = scores.get(self.metric)
        if score is None:
            return
        self.history.append({"epoch": epoch, "val": scores})
        self.trial.report(float(score), step=epoch)
        if steps < warmup_steps + self.min_steps:
            return  # too early to judge (successive halving judges its passed rungs at the next call)
        # should_prune() first, always: successive halving records the trial's rung in it
        if self.trial.should_prune() and epoch < planned:
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.metric} {score:.4f}")


def interruption_callback() -> Any:
    """A Trainer callback that stops training at once, with TrialInterrupted, when the round in this
    process was interrupted."""
    from transformers import TrainerCallback

    class Interruption(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            if INTERRUPTED.is_set():
                raise TrialInterrupted("the round was interrupted")

        on_prediction_step = on_step_end  # evaluation steps too

    return Interruption()


def pruning_callback(judge: Judge) -> Any:
    """A Trainer callback that hands each epoch's validation scores to `judge` (which may prune)."""
    from transformers import TrainerCallback

    from tasks.model.plan import eval_scores

    class ReportToOptuna(TrainerCallback):
        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **_: Any) -> None:
            planned = round(args.num_train_epochs)
            judge.epoch(
                round(state.epoch or 0), eval_scores(metrics or {}), state.global_step, args.warmup_steps, planned
            )

    return ReportToOptuna()


def model_for_round(config: SweepConfig, state: SweepState, round_number: int) -> ModelRef:
    """The base model a round fine-tunes: the chosen one, or with `next_candidate` escalation the
    round's place in the selection ranking (staying on the last one)."""
    if "next_candidate" not in config.escalation or not state.candidates:
        return state.model
    return state.candidates[min(round_number - 1, len(state.candidates) - 1)]


def trial_history(callback_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-epoch records in the shape the tracking module logs."""
    return [{"epoch": entry["epoch"], "train_loss": None, "val": entry["val"]} for entry in callback_history]


def trial_folder(state: SweepState, trial: Any) -> Path:
    """Where a trial trains: a retry of a dead trial uses the dead trial's folder, so it resumes
    from that trial's last checkpoint instead of starting over."""
    number = trial.system_attrs.get("failed_trial", trial.number)
    return Path(state.folder) / f"trial-{number:03d}"


def trained_once(
    state: SweepState,
    model: ModelRef,
    train: TrainConfig,
    eval_config: EvalConfig,
    folder: Path,
    trust_remote_code: bool,
    log: Any,
    judge: Judge,
    callbacks: list[Any] | None,
) -> dict[str, Any]:
    """A trial scored on the validation split: one fine-tuning, its epochs judged as they end; its
    outcome (history, chosen epoch, model, plan, validation predictions)."""
    from tasks.model.finetune import finetune

    reporting = [pruning_callback(judge), interruption_callback(), *(callbacks or [])]
    trained = finetune(state.splits, model, train, eval_config, folder, trust_remote_code, log=log, callbacks=reporting)
    return {
        "history": [record.model_dump() for record in trained.history],
        "best_epoch": trained.best_epoch,
        "model_path": trained.path,
        "plan": trained.plan.model_dump(),
        "predictions": trained.validation_predictions,
        "resumed_from": trained.resumed_from,  # a retry of a dead trial: its last checkpoint
    }


def cross_validated(
    state: SweepState,
    model: ModelRef,
    train: TrainConfig,
    eval_config: EvalConfig,
    folder: Path,
    folds: int,
    trust_remote_code: bool,
    log: Any,
    judge: Judge,
) -> dict[str, Any]:
    """A trial scored by cross-validation of train + validation (tasks/model/crossval.py), each epoch's
    out-of-fold score judged; its outcome (history, chosen epoch, plan, out-of-fold predictions; no
    model: the sweep refits its best trial). Its epochs reach MLflow when it ends."""
    import pandas as pd

    from tasks.model.crossval import cross_validate
    from tasks.model.finetune import prepare

    fitting, frames = prepare(state.splits, model, train, eval_config.metric, trust_remote_code, log)
    pool = pd.concat([frames["train"], frames["validation"]], ignore_index=True)

    def on_epoch(record: EpochRecord, plan: TrainingPlan) -> None:
        steps = record.epoch * plan.steps_per_epoch
        judge.epoch(record.epoch, record.val, steps, plan.warmup_steps, plan.epochs)

    report = cross_validate(fitting, pool, folds, train.seed, folder, on_epoch, [interruption_callback()])
    return {
        "history": [record.model_dump() for record in report.history],
        "best_epoch": report.best_epoch,
        "model_path": None,
        "plan": report.plan.model_dump(),
        "predictions": report.predictions,
        "folds": folds,
    }


def run_trial(
    config: SweepConfig,
    state: SweepState,
    train: TrainConfig,
    eval_config: EvalConfig,
    number: int,
    trust_remote_code: bool,
    log: Any,
    callbacks: list[Any] | None = None,
    attributes: dict[str, Any] | None = None,
) -> TrialResult:
    """Fine-tune trial `number` of the study (asked by the round, parameters fixed) with pruning
    and a heartbeat, and tell the study the outcome; the trial's record is in its user attributes
    (with `attributes`, set when it starts)."""
    import shutil

    import optuna

    folds = trial_folds(config, train.refit, state.splits.validation.rows)
    rows = scored_rows(config, train.refit, state)
    study = open_study(config, state.study_name, state.storage, validation_rows=rows)
    frozen = study.trials[number]
    if frozen.state.is_finished():  # a retried flow run of a trial that already ended
        return trial_result(frozen)
    trial = optuna.trial.Trial(study, trial_id(state.storage, state.study_name, number))
    round_number = int(frozen.user_attrs.get("round", 1))
    params = dict(frozen.params)
    folder = trial_folder(state, frozen)
    judge = Judge(trial, config.metric, config.pruning_min_steps)
    started = time.perf_counter()
    for key, value in {"started_at": time.time(), **(attributes or {})}.items():
        trial.set_user_attr(key, value)
    outcome: dict[str, Any] = {}
    with heartbeat(state.storage, state.study_name, number):
        try:
            model = model_for_round(config, state, round_number)
            trained = train.model_copy(update={**params, "refit": "never"})  # the sweep refits its final candidate
            scoring = eval_config.model_copy(update={"metric": config.metric})
            if folds:
                outcome = cross_validated(state, model, trained, scoring, folder, folds, trust_remote_code, log, judge)
            else:
                outcome = trained_once(state, model, trained, scoring, folder, trust_remote_code, log, judge, callbacks)
            chosen = next(record for record in outcome["history"] if record["epoch"] == outcome["best_epoch"])
            tell: tuple[Any, ...] = (chosen["val"][config.metric],)
        except optuna.TrialPruned as pruned:
            scores = [entry["val"][config.metric] for entry in judge.history]
            outcome = {"history": trial_history(judge.history), "score": max(scores, default=None)}
            tell = (None, optuna.trial.TrialState.PRUNED)
            log.info("Trial %d %s", number, pruned)
        except Exception as error:  # a failed trial must not end the sweep; it is recorded and reported
            outcome = {"error": f"{type(error).__name__}: {error}"[:500], "history": trial_history(judge.history)}
            tell = (None, optuna.trial.TrialState.FAIL)
            log.warning("Trial %d failed: %s", number, outcome["error"])
        outcome["seconds"] = round(time.perf_counter() - started, 2)
        for key, value in outcome.items():
            trial.set_user_attr(key, value)
        study.tell(number, tell[0], state=tell[1] if len(tell) > 1 else None, skip_if_finished=True)
    # the trial ended (a dead one's retry needs them, and never gets here): its model is all it keeps
    for checkpoints in [folder / "checkpoints", *folder.glob("fold-*/checkpoints")]:
        shutil.rmtree(checkpoints, ignore_errors=True)
    return trial_result(study.trials[number])
