"""One trial: ask the study for a configuration, fine-tune it with per-epoch pruning on the
validation score (on a GPU, holding the GPU concurrency limit), and tell the study the result."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from tasks.config.eval import EvalConfig
from tasks.config.sweep import SweepConfig
from tasks.config.train import TrainConfig
from tasks.model.resolve import ModelRef
from tasks.sweep.search import open_study, suggest
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
    """Whether trials with this train section run on a CUDA GPU (train.device, or auto on a GPU machine)."""
    from tasks.model.plan import choose_device

    return choose_device(train)[0] == "cuda"


def gpu_slot(config: SweepConfig, on_gpu: bool) -> AbstractContextManager:
    """What a trial holds while it trains: on a GPU, one slot of the configured Prefect global
    concurrency limit (strict: a missing limit is an error, not a free pass); otherwise nothing."""
    if config.gpu_concurrency_limit and on_gpu:
        from prefect.concurrency.sync import concurrency

        return concurrency(config.gpu_concurrency_limit, occupy=1, strict=True)
    return nullcontext()


def pruning_callback(trial: Any, metric: str) -> Any:
    """Report each epoch's validation score to Optuna and stop the Trainer when the pruner says so.
    A trial at its last epoch is never pruned: stopping saves nothing, and the study learns more
    from a finished trial (and keeps its model) than from a pruned one."""
    import optuna
    from transformers import TrainerCallback

    from tasks.model.plan import eval_scores

    class ReportToOptuna(TrainerCallback):
        def __init__(self) -> None:
            self.history: list[dict[str, Any]] = []  # kept here too: a pruned trial's Trainer never returns

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **_: Any) -> None:
            score = (metrics or {}).get(f"eval_{metric}")
            if score is None:
                return
            epoch = round(state.epoch or 0)
            self.history.append({"epoch": epoch, "val": eval_scores(metrics or {})})
            trial.report(float(score), step=epoch)
            # should_prune() first, always: successive halving records the trial's rung in it
            if trial.should_prune() and epoch < round(args.num_train_epochs):
                raise optuna.TrialPruned(f"pruned after epoch {epoch}: {metric} {score:.4f}")

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


def run_trial(
    config: SweepConfig,
    state: SweepState,
    train: TrainConfig,
    eval_config: EvalConfig,
    round_number: int,
    slot: int,
    trust_remote_code: bool,
    log: Any,
) -> TrialResult:
    """Ask the study for one configuration, fine-tune it with pruning, tell the study the result.
    `slot` (unique within the sweep) seeds the sampler."""
    import shutil

    import optuna

    from tasks.model.finetune import finetune

    study = open_study(config, state.study_name, state.storage, slot)
    trial = study.ask()
    trial.set_user_attr("round", round_number)
    params = suggest(trial, config, train)
    folder = Path(state.folder) / f"trial-{trial.number:03d}"
    reporter = pruning_callback(trial, config.metric)
    started = time.perf_counter()
    result = TrialResult(
        number=trial.number,
        round=round_number,
        params=params,
        state="complete",
        score=None,
        history=[],
        model_path=None,
        seconds=0.0,
        started_at=time.time(),
    )
    try:
        trained = finetune(
            state.splits,
            model_for_round(config, state, round_number),
            train.model_copy(update=params),
            eval_config.model_copy(update={"metric": config.metric}),
            folder,
            trust_remote_code,
            log=log,
            callbacks=[reporter],
        )
        result.history = [record.model_dump() for record in trained.history]
        result.score = max(record.val[config.metric] for record in trained.history)
        result.model_path = trained.path
        result.plan = trained.plan.model_dump()
        study.tell(trial, result.score)
    except optuna.TrialPruned as pruned:
        result.state, result.history = "pruned", trial_history(reporter.history)
        result.score = max((entry["val"][config.metric] for entry in reporter.history), default=None)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        log.info("Trial %d %s", trial.number, pruned)
    except Exception as error:  # a failed trial must not end the sweep; it is recorded and reported
        result.state, result.error = "failed", f"{type(error).__name__}: {error}"[:500]
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log.warning("Trial %d failed: %s", trial.number, result.error)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # the saved model is all a trial keeps
    result.seconds = round(time.perf_counter() - started, 2)
    return result
