"""The `trial` flow: one trial of a sweep, a flow run of its own so the work pool decides where it
runs (a process on a cpu worker, a Kubernetes Job with one GPU). The sweep's round asks its study
for the trial's configuration and starts this flow with `run_deployment` (as a subflow of the
round); run locally, the round calls it in-process."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from tasks.config.pipeline import SweepPipelineConfig
from tasks.core.errors import ConfigError
from tasks.core.gpus import one_gpu
from tasks.sweep.state import TrialResult
from tasks.sweep.steps import check_trial_device, run_sweep_trial
from tasks.tracking.live import mark_failed, mark_killed
from tasks.tracking.store import check_tracking


def trial_run_name() -> str:
    """`<sweep id> trial <n>` (`no sweep` for a run started by hand, which is refused)."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    return f"{parameters.get('sweep_id') or 'no sweep'} trial {parameters.get('trial_number', 0)}"


@flow(
    name="trial",
    flow_run_name=trial_run_name,
    on_failure=[mark_failed],
    on_crashed=[mark_failed],
    on_cancellation=[mark_killed],
)
def trial(
    config: SweepPipelineConfig = SweepPipelineConfig(),  # noqa: B008
    sweep_id: Annotated[str | None, Field(max_length=100)] = None,
    trial_number: Annotated[int, Field(ge=0)] = 0,
) -> TrialResult:
    """Fine-tune one trial of a sweep with the parameters its Optuna study holds for it.

    On a host with several GPUs it trains on one that no other trial there holds. Each epoch's
    validation score goes to the study (the pruner may stop the trial, whichever
    process runs it) and the trial's MLflow child run; a heartbeat in the study marks the trial
    failed if this run dies, and its retry resumes from this run's checkpoints. The outcome is
    written to the study, which the round reads: the study is the sweep's record.

    Args:
        config: The sweep's settings (the round passes its own; the storage locates the study).
        sweep_id: The sweep this trial belongs to.
        trial_number: The study's trial to run (asked by the round).
    """
    if not sweep_id:
        raise ConfigError(
            "A trial run belongs to a sweep: start a sweep (the sweep/cpu or sweep/weekly deployment, or "
            "`tuneloop sweep`) and its rounds start the trial runs, with sweep_id and trial_number."
        )
    with one_gpu(get_run_logger(), config.train.device) as gpu:  # before any CUDA call
        target = check_tracking(config.tracking)
        check_trial_device(config)
        return run_sweep_trial(config, sweep_id, trial_number, target, gpu)
