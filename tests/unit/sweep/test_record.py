"""The sweep's record in its Optuna storage, with real processes: atomic round claims, storages
created by several processes at once, the stored budget and its recorded extension, and a dead
worker's trial failed by its heartbeat and retried once (counted once)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from tasks.config.pipeline import SweepPipelineConfig
from tasks.config.sweep import SweepConfig
from tasks.sweep import record
from tests.unit.sweep.test_requeue import sweep_state


def claim_at_once(url: str, run_id: str, barrier: object) -> str | None:
    barrier.wait()  # type: ignore[attr-defined]
    return record.claim_round(url, "sweep-x", 2, run_id)


def create_at_once(url: str, name: str, barrier: object) -> str:
    barrier.wait()  # type: ignore[attr-defined]
    optuna.create_study(study_name=name, storage=record.rdb_storage(url), load_if_exists=True)
    return name


def die_in_a_trial(url: str) -> None:
    """A worker that starts a trial, beats once and is killed (kill -9) mid-training."""
    study = optuna.load_study(study_name="s", storage=record.rdb_storage(url))
    trial = study.ask()
    trial.set_user_attr("round", 1)
    trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True)
    with record.heartbeat(url, "s", trial.number):
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)


def at_once(function: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
    """`function(*call, barrier)` for every call, each in its own fresh process (spawned: no fork of
    this test process's threads), all released at the same moment."""
    context = spawn()
    with context.Manager() as manager:
        barrier = manager.Barrier(len(calls))
        with context.Pool(len(calls)) as pool:
            return pool.starmap(function, [(*call, barrier) for call in calls])


def spawn() -> multiprocessing.context.SpawnContext:
    return multiprocessing.get_context("spawn")


def test_of_runs_claiming_the_same_round_at_the_same_moment_exactly_one_wins(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    holders = at_once(claim_at_once, [(url, f"run-{n}") for n in range(4)])
    winners = [n for n, holder in enumerate(holders) if holder is None]
    assert len(winners) == 1, holders
    assert set(holders) == {None, f"run-{winners[0]}"}
    # The winner's retry (same flow run) still holds it; anyone else is told who does.
    assert record.claim_round(url, "sweep-x", 2, f"run-{winners[0]}") is None
    assert record.claim_round(url, "sweep-x", 2, "run-late") == f"run-{winners[0]}"


def test_a_claim_whose_lease_ran_out_is_taken_over_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert record.claim_round(url, "sweep-x", 1, "run-a") is None
    assert record.claim_round(url, "sweep-x", 1, "run-b") == "run-a", "a live claim holds"
    with record.round_lease(url, "sweep-x", 1, "run-a"):
        monkeypatch.setattr(record, "LEASE_SECONDS", 0.5)
        time.sleep(1)  # run-a "died": no renewal within the lease (renewals come every 10 s)
        assert record.claim_round(url, "sweep-x", 1, "run-b") is None, "taken over"
    monkeypatch.setattr(record, "LEASE_SECONDS", 60)
    assert record.claim_round(url, "sweep-x", 1, "run-a") == "run-b", "the dead run does not get it back"


def test_a_round_that_fails_gives_its_claim_up_and_a_finished_one_keeps_it(tmp_path: Path) -> None:
    """An interrupted local sweep (Ctrl-C, SIGTERM) is continued at once, not after the lease."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert record.claim_round(url, "sweep-x", 1, "run-a") is None
    with pytest.raises(KeyboardInterrupt), record.round_lease(url, "sweep-x", 1, "run-a"):
        raise KeyboardInterrupt
    assert record.claim_round(url, "sweep-x", 1, "run-b") is None, "given up: taken over without waiting"
    with record.round_lease(url, "sweep-x", 1, "run-b"):
        pass
    assert record.claim_round(url, "sweep-x", 1, "run-c") == "run-b", "a round that ended keeps its claim"


def test_three_sweeps_started_at_once_in_a_fresh_home_all_get_their_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'optuna.db'}"
    created = at_once(create_at_once, [(url, f"sweep-{n}") for n in range(3)])
    assert created == ["sweep-0", "sweep-1", "sweep-2"]
    storage = record.rdb_storage(url)
    assert sorted(study.study_name for study in storage.get_all_studies()) == created


def test_the_budget_is_stored_with_the_sweep_and_extended_only_on_purpose(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="sweep-test", storage=record.rdb_storage(url))
    record.save_setup(study, sweep_state(storage=url, max_rounds=1), SweepPipelineConfig().model_dump(mode="json"))
    # A later run's config with a bigger budget does not change what is stored.
    loaded = record.load_sweep(SweepConfig(storage=url, max_rounds=5), "sweep-test")
    assert loaded and loaded.budget.max_rounds == 1 and loaded.storage == url
    assert "storage" not in study.user_attrs[record.SETUP], "the URL (maybe with a password) is not stored"
    extended = record.extend_budget(
        study, loaded.budget.model_copy(update={"max_rounds": 3}), "tuneloop sweep --continue"
    )
    again = record.load_sweep(SweepConfig(storage=url), "sweep-test")
    assert again and again.budget.max_rounds == 3 == extended.max_rounds
    [entry] = again.budget.history
    assert entry["from"]["max_rounds"] == 1 and entry["to"]["max_rounds"] == 3 and entry["reason"]


def test_later_rounds_run_the_config_the_sweep_started_with(tmp_path: Path) -> None:
    """What decides trust never comes from a later run's parameters (an event payload, a form)."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="sweep-test", storage=record.rdb_storage(url))
    started = SweepPipelineConfig.model_validate({"sweep": {"storage": url}})
    state = sweep_state(storage=url, max_rounds=2)
    record.save_setup(study, state, started.model_dump(mode="json"))
    payload = started.model_copy(deep=True)
    payload.model.trust_remote_code, payload.data.path = True, "/elsewhere/data.csv"
    used = record.stored_config(state, payload)
    assert used.model.trust_remote_code is False and used.data.path == started.data.path
    assert used.sweep.storage == url and used.sweep.max_rounds == 2
    assert study.user_attrs[record.CONFIG]["sweep"]["storage"] is None, "no storage URL (maybe a password) stored"


def test_a_gp_sweep_stored_with_a_pruner_continues_unpruned(tmp_path: Path) -> None:
    """A GP sweep stored before gp refused pruners (sweep.pruner=median) is continued, not refused,
    and runs as gp is now run: without a pruner."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="sweep-test", storage=record.rdb_storage(url))
    started = SweepPipelineConfig().model_dump(mode="json")
    started["sweep"].update(sampler="gp", pruner="median", storage=url)
    state = sweep_state(storage=url, max_rounds=2)
    record.save_setup(study, state, started)
    used = record.stored_config(state, SweepPipelineConfig())
    assert used.sweep.sampler == "gp" and used.sweep.pruning == "none"


def test_a_dead_workers_trial_is_failed_by_its_heartbeat_retried_once_and_counted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    monkeypatch.setattr(record, "GRACE_SECONDS", 2)  # stale after 2 s without a beat (30 s in use)
    monkeypatch.setattr(record, "_storages", {})
    study = optuna.create_study(study_name="s", storage=record.rdb_storage(url))
    worker = spawn().Process(target=die_in_a_trial, args=(url,))
    worker.start()
    worker.join(60)
    assert worker.exitcode == -signal.SIGKILL
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING, "nobody told the study"
    time.sleep(3)
    optuna.storages.fail_stale_trials(study)
    dead, retry = study.get_trials(deepcopy=False)
    assert dead.state == optuna.trial.TrialState.FAIL and retry.state == optuna.trial.TrialState.WAITING
    assert retry.params == dead.params and retry.system_attrs["failed_trial"] == 0
    assert retry.user_attrs["round"] == 1
    [counted] = record.study_trials(study)
    assert counted.number == retry.number and counted.retry_of == 0 and counted.state == "waiting"


def test_a_sweep_run_from_another_host_over_sqlite_is_warned_about(tmp_path: Path) -> None:
    import socket

    here = sweep_state(storage=f"sqlite:///{tmp_path / 'optuna.db'}").model_copy(update={"host": socket.gethostname()})
    elsewhere = here.model_copy(update={"host": "gpu-node-7"})
    on_postgres = elsewhere.model_copy(update={"storage": "postgresql://tuneloop:secret@db:5432/optuna"})
    assert record.other_host_on_sqlite(here) is None
    assert record.other_host_on_sqlite(on_postgres) is None
    warning = record.other_host_on_sqlite(elsewhere)
    assert warning and "gpu-node-7" in warning and "Postgres" in warning
