"""The `sweep` flow: rounds of hyperparameter trials until the model is good enough."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from prefect.states import State
from pydantic import Field

from flows.validate import check_data
from tasks.config import PipelineConfig
from tasks.requeue import check_round, queue_next_round
from tasks.select import select_base_model
from tasks.split import split_dataset
from tasks.sweep import (
    SweepResult,
    begin_sweep,
    close_round,
    final_state,
    finish_sweep,
    run_sweep_trial,
    start_sweep,
    trial_batches,
    trials_this_round,
)
from tasks.track import check_tracking


@flow(name="sweep")
def sweep(
    config: PipelineConfig = PipelineConfig(),  # noqa: B008
    sweep_id: Annotated[str | None, Field(max_length=100)] = None,
    round_number: Annotated[int, Field(ge=1, le=100)] = 1,
) -> SweepResult | State:
    """Tune hyperparameters in rounds until validation F1 reaches `sweep.target_f1`.

    Round 1 validates and splits the data once and chooses the base model; every round asks Optuna
    (seeded TPE, warm-started from all earlier trials) for trials, fine-tunes them with per-epoch
    pruning, and logs each as a child of the sweep's MLflow run. Below target with budget left, the
    next round is handed on: run from a deployment, as a new flow run (by this run or by the
    deployment's trigger on `tuneloop.sweep.below-threshold`); run locally, in this process. A
    round that was already claimed is skipped, and the budget (`max_rounds`, `max_trials`,
    `max_hours`) always ends the sweep.

    Args:
        config: Every setting of the sweep, grouped by step; the search space, target and budget
            are in `sweep`. Paths are relative to the deployment's working directory; endpoints and
            secrets come from the worker's environment.
        sweep_id: Continue this sweep (its id); empty: start a new one.
        round_number: The round this run performs (1 = the first).
    """
    target = check_tracking(config.tracking)
    sweep_id, folder, state = begin_sweep(sweep_id)
    if state is None:
        data = check_data(config, folder)
        splits = split_dataset(data.data.clean, config.split, folder / "splits", data.test.clean if data.test else None)
        selection = select_base_model(config.model, config.train, config.eval, splits, folder / "selection")
        state = start_sweep(config, sweep_id, folder, splits, selection, target)
    while True:
        refusal = check_round(config, state, round_number)
        if refusal:
            return final_state(finish_sweep(state, refusal, target))
        trials = []
        count = trials_this_round(config.sweep, round_number, state.trial_count)
        for first, size in trial_batches(state.trial_count, count, config.sweep.max_concurrent_trials):
            slots = range(first, first + size)
            futures = [run_sweep_trial.submit(config, state, round_number, slot, target) for slot in slots]
            trials += [future.result() for future in futures]
        state, decision = close_round(config, state, round_number, trials, target)
        if decision.action != "next_round":
            return final_state(finish_sweep(state, decision, target))
        queued = queue_next_round(config, state, round_number, decision)
        if queued:
            return finish_sweep(state, decision, target, queued)
        round_number += 1
