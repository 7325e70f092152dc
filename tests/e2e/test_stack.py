"""The production path against real servers: deployments from prefect.yaml, schedules, a run of
the train deployment executed by a worker and tracked in the MLflow server, server-side parameter
validation, and the sweep trigger on `tuneloop.sweep.below-threshold`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tasks.config.load import load_config
from tasks.config.pipeline import SweepPipelineConfig
from tests.helpers import ROOT, saved_checkpoint
from tests.helpers.stack import prefect_client, run_train_deployment, runs_of, stack_command, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(stack: dict[str, Any]) -> Iterator[Any]:
    """A Prefect client of the stack's server."""
    with prefect_client(stack) as client:
        yield client


def test_stack_reports_every_process_running(stack: dict[str, Any]) -> None:
    status = stack_command("status", stack["env"]).stdout
    for name in ("prefect-server", "mlflow-server", "worker-cpu", "worker-cpu-2", "worker-gpu"):
        assert f"{name}" in status
    assert "STOPPED" not in status and status.count("running") == 5


def test_prefect_yaml_deploys_pools_schedules_limits_and_the_trigger(stack: dict[str, Any], client: Any) -> None:
    nightly, weekly = client.read_deployment_by_name("train/nightly"), client.read_deployment_by_name("sweep/weekly")
    on_demand = client.read_deployment_by_name("train/cpu")
    assert (nightly.work_pool_name, weekly.work_pool_name, on_demand.work_pool_name) == ("gpu", "gpu", "cpu")
    assert all(d.enforce_parameter_schema for d in (nightly, weekly, on_demand))
    assert nightly.global_concurrency_limit.limit == 1 and on_demand.global_concurrency_limit.limit == 2
    cron = nightly.schedules[0].schedule
    assert (cron.cron, cron.timezone) == ("0 2 * * *", "Europe/Berlin")
    assert nightly.schedules[0].parameters["config"]["eval"]["min_f1"] == 0.8
    assert weekly.parameters["config"]["sweep"]["requeue"] == "trigger"
    assert nightly.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    assert nightly.job_variables["env"]["PREFECT_LOGGING_EXTRA_LOGGERS"] == "transformers"
    [automation] = [a for a in client.read_automations() if a.actions[0].deployment_id == weekly.id]
    assert automation.trigger.expect == {"tuneloop.sweep.below-threshold"}
    assert automation.trigger.match.get("tuneloop.sweep.requeue") in ("trigger", ["trigger"])
    assert automation.name == "sweep-weekly-next-round"


def test_schedules_produce_scheduled_runs(client: Any) -> None:
    nightly = client.read_deployment_by_name("train/nightly")
    scheduled = wait_for(
        lambda: [run for run in runs_of(client, nightly.id) if run.auto_scheduled and run.state.is_scheduled()],
        60,
        "scheduled runs of train/nightly",
    )
    assert all(run.parameters["config"]["tracking"]["experiment"] == "nightly-retrain" for run in scheduled)
    assert all(run.expected_start_time.hour in (0, 1) for run in scheduled), "02:00 Berlin is 00:00/01:00 UTC"


@pytest.mark.parametrize(
    ("parameters", "problem"),
    [
        ({"config": {"train": {"epochs": 0}}}, "epochs"),
        ({"config": {"train": {"method": "qlora"}}}, "method"),
        ({"config": {"train": {"batch_size": "many"}}}, "batch_size"),
        ({"config": {"sweep": {"target_f1": 1.5}}}, "target_f1"),
        ({"config": {"traning": {}}}, "traning"),
    ],
)
def test_bad_parameters_are_rejected_by_the_server_before_any_work(
    client: Any, parameters: dict[str, Any], problem: str
) -> None:
    from prefect.exceptions import PrefectHTTPStatusError

    on_demand = client.read_deployment_by_name("sweep/cpu")
    before = len(runs_of(client, on_demand.id))
    with pytest.raises(PrefectHTTPStatusError) as rejected:
        client.create_flow_run_from_deployment(on_demand.id, parameters=parameters)
    assert rejected.value.response.status_code == 409 and problem in rejected.value.response.text
    assert len(runs_of(client, on_demand.id)) == before


def test_train_deployment_run_by_the_cpu_worker_lands_in_the_mlflow_server(
    stack: dict[str, Any], client: Any, tiny_bert: Path
) -> None:
    from mlflow.tracking import MlflowClient

    first = run_train_deployment(stack, client, tiny_bert, "e2e-stack", epochs=4)
    second = run_train_deployment(stack, client, tiny_bert, "e2e-stack")
    # The second run scored the first run's champion on its own test split: the champion came from
    # the server's artifact store (mlflow-artifacts:), resolved through the server's registry.
    registry = MlflowClient(tracking_uri=stack["mlflow_url"])
    [champion] = registry.search_model_versions(f"run_id = '{first.info.run_id}'")
    [candidate] = registry.search_model_versions(f"run_id = '{second.info.run_id}'")
    assert registry.get_model_version_by_alias(champion.name, "champion").version == champion.version
    assert candidate.tags["promotion.compared_with"] == champion.version
    assert "could not be evaluated" not in candidate.tags["promotion.reason"], candidate.tags["promotion.reason"]

    # The champion scores a file in a run of the daily scoring deployment on the cpu worker,
    # fetched from the server's registry and artifact store.
    output = Path(stack["home"]) / "scores.parquet"
    scoring = client.create_flow_run_from_deployment(
        client.read_deployment_by_name("score/daily").id, parameters={"config": {"output": str(output)}}
    )
    done = wait_for(lambda: (found := client.read_flow_run(scoring.id)).state.is_final() and found, 300, "scoring")
    assert done.state.is_completed(), done.state.message
    frame = pd.read_parquet(output)
    current = registry.get_model_version_by_alias(champion.name, "champion").version
    assert len(frame) > 1000 and set(frame["model_version"]) == {current} and frame["score"].between(0, 1).all()


def below_threshold(sweep_id: str, requeue: str, deployment_name: str) -> dict[str, Any]:
    """The event a round emits, plus a config in its payload as someone posting events might add."""
    overrides = ["sweep.requeue=trigger", "tracking.experiment=e2e-trigger", "model.trust_remote_code=true"]
    config = load_config(None, overrides, SweepPipelineConfig)
    parameters = {"config": config.model_dump(mode="json"), "sweep_id": sweep_id, "round_number": 2}
    return {
        "event": "tuneloop.sweep.below-threshold",
        "resource": {
            "prefect.resource.id": f"tuneloop.sweep.{sweep_id}",
            "tuneloop.sweep.requeue": requeue,
            "tuneloop.sweep.deployment": deployment_name,
        },
        "payload": {"sweep_id": sweep_id, "round": 1, "next_round": 2, "parameters": parameters},
    }


def test_below_threshold_event_queues_the_next_round_through_the_trigger(stack: dict[str, Any], client: Any) -> None:
    import httpx
    from prefect.client.schemas.actions import WorkPoolUpdate
    from prefect.events import Event

    client.update_work_pool("gpu", WorkPoolUpdate(is_paused=True))  # look at the queued run, do not train it
    weekly = client.read_deployment_by_name("sweep/weekly")
    ignored, wanted = f"sweep-e2e-{uuid.uuid4().hex[:6]}", f"sweep-e2e-{uuid.uuid4().hex[:6]}"
    # Posted straight to the stack's API: emit_event goes through a process-wide events worker,
    # which stays bound to whichever server this test process talked to first (the flow tests'
    # harness, when they ran earlier). The first event's run already queued its next round itself:
    # the trigger must not add a second one.
    events = [
        Event(**below_threshold(ignored, "run_deployment", "sweep/weekly")),
        Event(**below_threshold(wanted, "trigger", "sweep/weekly")),
    ]
    posted = httpx.post(f"{stack['prefect_api_url']}/events", json=[e.model_dump(mode="json") for e in events])
    assert posted.status_code == 204, posted.text

    def queued_for(sweep_id: str) -> list[Any]:
        return [run for run in runs_of(client, weekly.id) if run.parameters.get("sweep_id") == sweep_id]

    [run] = wait_for(lambda: queued_for(wanted), 90, "the trigger's sweep run")
    assert run.parameters["round_number"] == 2
    # the trigger passes which round of which sweep, never the payload's config: the deployment's own
    config = run.parameters["config"]
    assert config["tracking"]["experiment"] == "weekly-sweep" and "model" not in config, config
    assert run.state.is_scheduled() and run.created_by and run.created_by.type == "AUTOMATION"
    time.sleep(3)
    assert queued_for(ignored) == [] and len(queued_for(wanted)) == 1


def sweep_round_config(tiny_bert: Path, experiment: str, *overrides: str) -> dict[str, Any]:
    """The sweep/cpu form for one round of two tiny trials at once (only what differs from the defaults)."""
    settings = [f"model.candidates=[{tiny_bert}]", "train.batch_size=64", "train.max_length=32", "train.epochs=2"]
    settings += ["train.early_stopping_patience=0", "sweep.trials_per_round=2", "sweep.max_rounds=1"]
    settings += ["sweep.max_concurrent_trials=2", "sweep.target_f1=1.0", "sweep.pruner=none"]
    settings += ["sweep.cross_validation=never"]  # one Trainer a trial: its flow run on a worker is what is tested
    settings += ["sweep.trial_deployment=trial/cpu", f"tracking.experiment={experiment}", *overrides]
    config = load_config(ROOT / "data/sample/config.yaml", settings, SweepPipelineConfig)
    return {"config": config.model_dump(mode="json", exclude_defaults=True)}


def trial_runs(client: Any, round_run_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    children = FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[round_run_id]))
    return sorted(client.read_flow_runs(flow_run_filter=children), key=lambda run: run.parameters["trial_number"])


def test_a_sweep_round_runs_its_trials_as_trial_flow_runs_on_the_cpu_workers(
    stack: dict[str, Any], client: Any, tiny_bert: Path
) -> None:
    import optuna
    from mlflow.tracking import MlflowClient

    sweeps = client.read_deployment_by_name("sweep/cpu")
    round_run = client.create_flow_run_from_deployment(sweeps.id, parameters=sweep_round_config(tiny_bert, "e2e-scale"))
    done = wait_for(lambda: (found := client.read_flow_run(round_run.id)).state.is_final() and found, 600, "the round")
    assert done.state.is_completed(), done.state.message
    trials = trial_runs(client, round_run.id)
    assert [run.parameters["trial_number"] for run in trials] == [0, 1]
    assert all(run.state.is_completed() and run.work_pool_name == "cpu" for run in trials)
    first, second = trials
    assert first.start_time < second.end_time and second.start_time < first.end_time, "the two trials overlapped"
    sweep_id = first.parameters["sweep_id"]

    tracking = MlflowClient(stack["mlflow_url"])
    experiment = tracking.get_experiment_by_name("e2e-scale").experiment_id
    runs = tracking.search_runs([experiment], f"tags.sweep_id = '{sweep_id}'")
    [parent] = [run for run in runs if run.data.tags["kind"] == "sweep"]
    children = [run for run in runs if run.data.tags["kind"] == "trial"]
    assert sorted(run.data.tags["trial_number"] for run in children) == ["0", "1"]
    assert all(run.data.tags["mlflow.parentRunId"] == parent.info.run_id for run in children)
    study = optuna.load_study(study_name=sweep_id, storage=f"sqlite:///{stack['home']}/optuna.db")
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "COMPLETE"]


def flow_run_process(flow_run_id: Any) -> Any:
    """The process a worker started for a flow run (its environment names the run)."""
    import psutil

    for process in psutil.process_iter():
        try:
            if process.environ().get("PREFECT__FLOW_RUN_ID") == str(flow_run_id):
                return process
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return None


@pytest.mark.drill
def test_a_trial_killed_mid_training_is_retried_from_its_checkpoint_and_counted_once(
    stack: dict[str, Any], client: Any, tiny_bert: Path
) -> None:
    import signal

    import optuna
    from mlflow.tracking import MlflowClient

    overrides = ("sweep.trials_per_round=1", "sweep.max_concurrent_trials=1", "train.epochs=3", "train.batch_size=8")
    parameters = sweep_round_config(tiny_bert, "e2e-crash", *overrides)
    deployment = client.read_deployment_by_name("sweep/cpu")
    round_run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
    [trial] = wait_for(lambda: trial_runs(client, round_run.id), 300, "the trial's flow run")
    sweep_id = trial.parameters["sweep_id"]
    checkpoints = Path(stack["home"]) / "sweeps" / sweep_id / "trial-000" / "checkpoints"
    wait_for(lambda: saved_checkpoint(checkpoints, "checkpoint-*"), 300, "a checkpoint")
    process = wait_for(lambda: flow_run_process(trial.id), 30, "the trial's process")
    process.send_signal(signal.SIGKILL)  # the worker's child dies mid-training, as on a lost node

    done = wait_for(lambda: (found := client.read_flow_run(round_run.id)).state.is_final() and found, 600, "the round")
    assert done.state.is_completed(), done.state.message
    dead, retry = trial_runs(client, round_run.id)
    assert not dead.state.is_completed() and retry.state.is_completed()
    study = optuna.load_study(study_name=sweep_id, storage=f"sqlite:///{stack['home']}/optuna.db")
    first, second = study.trials
    assert first.state.name == "FAIL" and second.state.name == "COMPLETE"
    assert second.system_attrs["failed_trial"] == 0 and second.params == first.params
    assert "checkpoint-" in second.user_attrs["resumed_from"], "the retry resumed instead of starting over"
    from tasks.sweep.record import study_trials

    assert [trial.number for trial in study_trials(study)] == [1], "a retried trial counts once"
    assert "1 round(s)" in done.state.message and "max_trials" not in done.state.message
    tracking = MlflowClient(stack["mlflow_url"])
    runs = tracking.search_runs([tracking.get_experiment_by_name("e2e-crash").experiment_id], "tags.kind = 'trial'")
    states = {run.data.tags["trial_number"]: run.info.status for run in runs}
    assert states == {"0": "FAILED", "1": "FINISHED"}, states
