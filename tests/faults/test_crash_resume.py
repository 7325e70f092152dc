"""A crash from the command line: `kill -9` of `tuneloop run` mid-training takes its temporary
Prefect server with it, and the same command run again continues the unfinished run (same run
folder, same MLflow run, from its last checkpoint) and says so in one line."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psutil
import pytest

from tests.helpers import ROOT, own_homes, sample_command, saved_checkpoint, trial_processes
from tests.helpers.stack import wait_for


def serves(process: psutil.Process) -> bool:
    """Whether a child process is a (live) uvicorn server."""
    try:
        return "uvicorn" in " ".join(process.cmdline()) and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def around_traceback(said: str) -> str:
    """What a command printed around its first traceback (or its end when there is none), for a
    failed check's message: the traceback is what the reader needs, not the last lines."""
    first = said.find("Traceback")
    return said[-3000:] if first < 0 else said[max(0, first - 1000) : first + 5000]


def test_a_killed_run_takes_its_prefect_server_along_and_the_same_command_continues_it(
    tiny_bert: Path, tmp_path: Path, migrated_prefect: Path
) -> None:
    from mlflow.tracking import MlflowClient

    home, env = tmp_path / "home", own_homes(tmp_path, migrated_prefect)
    settings = [f"model.candidates=[{tiny_bert}]", "train.epochs=3", "train.early_stopping_patience=0"]
    command = sample_command("run", *settings, "train.batch_size=8", "train.max_length=32", "tracking.experiment=crash")

    first = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        checkpoint = wait_for(
            lambda: saved_checkpoint(home, "runs/*-train-*/checkpoints/checkpoint-*"), 240, "a checkpoint"
        )
        servers = [child for child in psutil.Process(first.pid).children() if serves(child)]
        assert servers, "the command runs its temporary Prefect server as a child"
        first.send_signal(signal.SIGKILL)  # as the OOM killer would
        first.wait(30)
        _, alive = psutil.wait_procs(servers, timeout=15)
        assert not alive, "the temporary Prefect server died with the command"
    finally:
        first.kill()
    folder = checkpoint.parent.parent
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "running" and record["mlflow_run_id"]

    started = time.monotonic()
    again = subprocess.run([*command, "--json"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    said = again.stdout + again.stderr
    assert said.count(f"Continuing the unfinished run {folder.name}") == 1, said[-3000:]
    assert f"resuming from {checkpoint.name}" in said or "resuming from checkpoint-" in said, said[-3000:]
    result = json.loads(again.stdout.strip().splitlines()[-1])
    assert result["run_folder"] == str(folder) and result["run_id"] == record["mlflow_run_id"]
    assert json.loads((folder / "run.json").read_text())["status"] == "finished"
    assert not (folder / "checkpoints").exists(), "a finished run keeps its model, not its checkpoints"
    assert not (folder / "refit" / "checkpoints").exists(), "nor the checkpoints of its refit"
    assert json.loads((folder / "model" / "tuneloop.json").read_text())["refit"], "the sample's 111 rows: refit"
    assert [path.name for path in (home / "runs").glob("*-train-*")] == [folder.name], "no second run folder"

    tracking = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = tracking.get_experiment_by_name("crash").experiment_id
    [run] = tracking.search_runs([experiment], "tags.kind = 'training'")
    assert run.info.run_id == record["mlflow_run_id"] and run.info.status == "FINISHED"
    steps = [metric.step for metric in tracking.get_metric_history(run.info.run_id, "val/f1_macro")]
    assert sorted(steps) == [1, 2, 3], steps
    assert time.monotonic() - started < 300


@pytest.mark.parametrize(
    "stop", [signal.SIGTERM, pytest.param(signal.SIGKILL, marks=pytest.mark.drill)], ids=["SIGTERM", "SIGKILL"]
)
def test_an_interrupted_local_sweep_stops_its_trial_processes_and_says_so_once(
    stop: signal.Signals, tiny_bert: Path, tmp_path: Path, migrated_prefect: Path
) -> None:
    """Two trials at once run in processes of the round; SIGTERM to the command ends them too (it
    does not wait for their trials), with one line and exit 143; kill -9 takes them along."""
    env = own_homes(tmp_path, migrated_prefect)
    settings = [f"model.candidates=[{tiny_bert}]", "train.batch_size=8", "train.max_length=32"]
    trials = [
        "sweep.cross_validation=never",  # one Trainer per trial: the trial processes are what is tested
        "sweep.max_concurrent_trials=2",
        "train.epochs=30",
        "train.early_stopping_patience=0",
        "sweep.max_rounds=1",
    ]
    command = sample_command("sweep", *settings, *trials)
    log, children = tmp_path / "sweep.log", list[psutil.Process]()
    with log.open("w") as output:
        sweep = subprocess.Popen(command, env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: log.read_text().count("Fine-tuning") >= 2 or None, 240, "two trials training")
            children = psutil.Process(sweep.pid).children(recursive=True)
            assert len(trial_processes(sweep.pid)) >= 2, "trial processes"
            sweep.send_signal(stop)
            assert sweep.wait(60) == (143 if stop == signal.SIGTERM else -signal.SIGKILL)
            _, alive = psutil.wait_procs(children, timeout=15)
            assert not alive, "the trial processes and the server ended with the command"
        finally:
            sweep.kill()
            for child in children:  # none when it passes; a failed check leaves no trainer behind
                with contextlib.suppress(psutil.Error):
                    child.kill()
    if stop == signal.SIGKILL:
        return
    said = log.read_text()
    once = said.count("error: interrupted") == 1
    assert once and "Traceback" not in said and "leaked" not in said, around_traceback(said)
    if hung := re.search(r"stopped without waiting \(threads: (\S+)\)", said):  # the watchdog ended it
        warnings.warn(f"the sweep's shutdown hung; its threads:\n{Path(hung[1]).read_text()}", stacklevel=1)
    assert "Timed out waiting" not in said, said[-3000:]  # Prefect's wait on the trial processes' log queue


HANGS_ON_EXIT = """
import signal, sys, threading, time
import typer
from flows import console
console.SHUTDOWN_GRACE_SECONDS = 1
signal.signal(signal.SIGTERM, console.raise_terminated)
threading.Thread(target=time.sleep, args=(3600,)).start()  # not a daemon: Python's exit waits for it
try:
    with console.user_errors():
        print("ready", flush=True)
        time.sleep(3600)
except typer.Exit as stop:
    sys.exit(stop.exit_code)
"""


def test_an_interrupted_command_whose_shutdown_hangs_still_exits_with_its_line() -> None:
    """SIGTERM to a command whose shutdown would wait for good (a thread that never ends, as a lock
    left held by a killed trial process did): the watchdog ends it after the grace period, exit 143,
    the interrupted line once, and a warning naming the file with every thread's stack."""
    command = [sys.executable, "-c", HANGS_ON_EXIT]
    hanging = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert hanging.stdout is not None and hanging.stdout.readline().strip() == "ready"
        hanging.send_signal(signal.SIGTERM)
        _, said = hanging.communicate(timeout=60)
    finally:
        hanging.kill()
    assert hanging.returncode == 143, said
    assert said.count("error: interrupted") == 1 and "Traceback" not in said, said
    [threads] = re.findall(r"stopped without waiting \(threads: (\S+)\)", said)
    stacks = Path(threads).read_text()
    Path(threads).unlink()
    assert stacks.count("(most recent call first)") >= 2, stacks  # the main thread and the one it waits for


@pytest.mark.drill
def test_an_interrupted_one_at_a_time_sweep_stops_its_trial_at_once_and_gives_its_round_up(
    tiny_bert: Path, tmp_path: Path, migrated_prefect: Path
) -> None:
    """SIGTERM to `tuneloop sweep` whose trial trains in a thread of the command (one at a time, the
    default): the trial stops at its next step instead of training its 12 epochs first; it stays
    unfinished in the study (its retry on --continue resumes from its checkpoint), the round's
    claim is given up, so --continue takes the round over at once, and no MLflow run of the stopped
    sweep is left RUNNING."""
    import optuna
    import sqlalchemy as sa
    from mlflow.tracking import MlflowClient

    home, env = tmp_path / "home", own_homes(tmp_path, migrated_prefect)
    settings = [f"model.candidates=[{tiny_bert}]", "train.batch_size=8", "train.max_length=32", "train.epochs=12"]
    once = ["train.early_stopping_patience=0", "sweep.trials_per_round=1", "sweep.cross_validation=never"]
    command = sample_command("sweep", *settings, *once)
    log = tmp_path / "sweep.log"
    with log.open("w") as output:
        sweep = subprocess.Popen(command, env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: saved_checkpoint(home, "sweeps/*/trial-*/checkpoints/checkpoint-*"), 240, "a checkpoint")
            sweep.send_signal(signal.SIGTERM)
            assert sweep.wait(45) == 143
        finally:
            sweep.kill()
    said = log.read_text()
    assert "epoch 12/12" not in said, said[-3000:]
    assert said.count("error: interrupted") == 1 and "Traceback" not in said, around_traceback(said)
    storage = f"sqlite:///{home / 'optuna.db'}"
    [name] = optuna.get_all_study_names(storage)
    [trial] = optuna.load_study(study_name=name, storage=storage).trials
    assert trial.state == optuna.trial.TrialState.RUNNING, "not told: failed by its heartbeat and retried"
    with sa.create_engine(storage).connect() as connection:
        claims = connection.execute(sa.text("select count(*) from tuneloop_round_claims")).scalar()
    assert claims == 0, "the interrupted round gave its claim up"
    tracking = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = tracking.search_runs([experiment.experiment_id for experiment in tracking.search_experiments()])
    ended = {run.data.tags["kind"]: (run.info.status, run.data.tags.get("error", "")) for run in runs}
    stopped = all(status == "FAILED" and error for status, error in ended.values())
    assert set(ended) == {"sweep", "trial"} and stopped, ended


@pytest.mark.drill
def test_a_killed_local_trial_process_is_retried_and_the_sweep_finishes(
    tiny_bert: Path, tmp_path: Path, migrated_prefect: Path
) -> None:
    """`kill -9` of one of a local round's trial processes (the OOM killer's choice): the process
    pool breaks and stops the other one too; the round fails both trials, retries each once from its
    checkpoint in a fresh pool, and finishes; a trial and its retry count as one trial."""
    import optuna

    home, env = tmp_path / "home", own_homes(tmp_path, migrated_prefect)
    settings = [f"model.candidates=[{tiny_bert}]", "train.batch_size=32", "train.max_length=32"]
    trials = [
        "sweep.cross_validation=never",  # one Trainer per trial: the trial processes are what is tested
        "sweep.max_concurrent_trials=2",
        "sweep.trials_per_round=2",
        "sweep.max_rounds=1",
        "sweep.pruner=none",
        "train.epochs=3",
        "train.early_stopping_patience=0",
        "sweep.target_f1=1",
    ]
    log = tmp_path / "sweep.log"
    with log.open("w") as output:
        sweep = subprocess.Popen(
            [*sample_command("sweep", *settings, *trials), "--json"],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: saved_checkpoint(home, "sweeps/*/trial-*/checkpoints/checkpoint-*"), 240, "a checkpoint")
            processes = trial_processes(sweep.pid)
            assert len(processes) >= 2, "two trial processes"
            processes[0].kill()
            sweep.wait(400)
        finally:
            sweep.kill()
    said = log.read_text()
    assert sweep.returncode == 5, said[-4000:]  # the budget ran out below the unreachable target
    assert "Traceback" not in said, around_traceback(said)
    assert "retrying it as trial" in said, said[-4000:]
    [study_name] = optuna.get_all_study_names(f"sqlite:///{home / 'optuna.db'}")
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{home / 'optuna.db'}")
    states = [trial.state.name for trial in study.trials]
    failed = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.FAIL]
    retries = [trial for trial in study.trials if "failed_trial" in trial.system_attrs]
    assert failed and len(retries) == len(failed), states
    assert {trial.system_attrs["failed_trial"] for trial in retries} == {trial.number for trial in failed}
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in retries), states
    [line] = [line for line in said.splitlines() if line.startswith("{")]
    assert json.loads(line)["trials"] == 2 == len(study.trials) - len(retries), "a retried trial counts once"
