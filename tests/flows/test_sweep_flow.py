"""The sweep flow with a tiny BERT: rounds, warm start, pruning, parent/child MLflow runs."""

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
import pytest
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from flows.cli import app
from flows.sweep import sweep
from tasks.config.pipeline import SweepPipelineConfig
from tasks.config.sweep import SweepConfig
from tasks.core.errors import ConfigError
from tasks.sweep.record import closed_rounds, load_sweep, study_trials, sweep_study
from tasks.sweep.state import SweepResult, SweepState, TrialResult
from tasks.sweep.trial import gpu_limit_problem, gpu_slot
from tests.helpers import ROOT, configs, hold_a_gpu


def record(sweep_id: str) -> tuple[SweepState, list[TrialResult], dict[int, dict]]:
    """A sweep as its study in the home folder records it: setup, trials, closed rounds."""
    state = load_sweep(SweepConfig(), sweep_id)
    assert state is not None
    study = sweep_study(state)
    return state, study_trials(study), closed_rounds(study)


def test_unreachable_target_runs_exactly_max_rounds_warm_started(
    sweep_config: Callable[..., SweepPipelineConfig], tuneloop_home: Path
) -> None:
    result = sweep(config=sweep_config("sweep.target_f1=1.0"))
    assert result.outcome == "budget_spent" and result.rounds == 2 and result.trials == 6
    assert "Target not reached after 2 round(s)" in result.message and "max_rounds" in result.message
    assert list(record(result.sweep_id)[2]) == [1, 2]
    study = optuna.load_study(study_name=result.sweep_id, storage=f"sqlite:///{tuneloop_home / 'optuna.db'}")
    numbers = {trial.number: trial.user_attrs["round"] for trial in study.trials}
    assert sorted(numbers) == list(range(6)) and [numbers[n] for n in range(6)] == [1, 1, 1, 2, 2, 2]
    for trial in study.trials:
        assert {"learning_rate", "epochs", "weight_decay", "warmup_epochs"} == set(trial.params)
    assert len({trial.params["learning_rate"] for trial in study.trials}) == 6, "every trial proposes its own"

    client = mlflow.MlflowClient(f"sqlite:///{tuneloop_home / 'mlflow.db'}")
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["sweep_id"] == result.sweep_id and parent.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "sweep/best_f1_macro")] == [1, 2]
    assert {item.path for item in client.list_artifacts(parent.info.run_id, "sweep")} >= {"sweep/sweep_history.png"}
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    trials = [child for child in children if child.data.tags.get("kind") == "trial"]
    assert sorted(int(child.data.tags["trial_number"]) for child in trials) == list(range(6))
    assert len({frozenset(child.data.params) for child in trials}) == 1, "identical parameter keys in every trial"
    for child in trials:
        epochs = int(child.data.params["train.epochs"])
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val/f1_macro")] == list(
            range(1, epochs + 1)
        )
        assert child.data.tags["pruned"] == "False" and child.data.tags["sweep_id"] == result.sweep_id

    # The best trial is scored on test, its model logged and registered, but not promoted: the
    # target was not met. The comparison report is on the parent run.
    assert result.promotion.decision == "rejected" and result.promotion.champion_version is None
    assert "the sweep did not reach its target" in result.promotion.reason, "it says why, in one sentence"
    best = next(child for child in trials if child.data.tags["trial_number"] == str(result.best_trial))
    assert "test/f1_macro" in best.data.metrics and best.data.tags["final_model"] == "True"
    assert result.promotion.version.run_id == best.info.run_id
    version = client.get_model_version("tuneloop-classifier", result.promotion.version.version)
    assert version.tags["sweep_id"] == result.sweep_id and version.tags["trial_number"] == str(result.best_trial)
    # Tagged with the validated dataset's hash, as training runs are (comparable across both).
    state = record(result.sweep_id)[0]
    assert len(state.dataset_sha256) == 64 and state.dataset_sha256 != state.splits.train.sha256
    assert parent.data.tags["dataset_sha256"] == version.tags["dataset_sha256"] == state.dataset_sha256
    report = {item.path for item in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/parameters.png", "report/per_class.png"} <= report
    assert "report/trials.png" not in report, "one picture per idea: the sweep history is logged once, under sweep/"
    page = Path(
        mlflow.artifacts.download_artifacts(
            f"runs:/{parent.info.run_id}/report/report.html", tracking_uri=client.tracking_uri
        )
    ).read_text()
    # Every picture inside the page (MLflow's viewer shows HTML, not Markdown's linked images).
    assert page.count('src="data:image/png;base64,') == 4
    assert "Score by trial and round" in page and "Confusion matrix of the best trial" in page
    assert "Leaderboard" in page and "lora_r" not in page, "LoRA's rank is not shown for full fine-tuning"

    # The leaderboard of this sweep, best validation score first.
    board = CliRunner().invoke(app, ["compare", "--sweep", result.sweep_id, "--json"])
    assert board.exit_code == 0, board.output
    rows = json.loads(board.stdout.strip().splitlines()[-1])["runs"]
    assert [row["rank"] for row in rows] == list(range(1, 7)) and {row["kind"] for row in rows} == {"trial"}
    scores = [row["best_val"] for row in rows]
    assert scores == sorted(scores, reverse=True) and rows[0]["trial"] == result.best_trial
    assert rows[0]["best_val"] == pytest.approx(result.best_score) and rows[0]["test"] is not None
    assert {row["round"] for row in rows} == {1, 2} and not any(row["pruned"] for row in rows)
    assert set(rows[0]["params"]) >= {"train.learning_rate", "train.epochs", "train.method"}
    assert all(row["duration_s"] > 0 for row in rows)
    top = CliRunner().invoke(app, ["compare", "--sweep", result.sweep_id, "--top", "2"])
    assert top.exit_code == 0 and len(top.output.strip().splitlines()) == 3

    # A queued duplicate of a round that ran is skipped, and no round starts past the budget: no
    # trial is added either way (what guards the deployment trigger against loops).
    config = sweep_config("sweep.target_f1=1.0")
    duplicate = sweep(config=config, sweep_id=result.sweep_id, round_number=2, return_state=True)
    assert duplicate.name == "Skipped" and "already run" in duplicate.message
    past_budget = sweep(config=config, sweep_id=result.sweep_id, round_number=3, return_state=True)
    assert past_budget.name == "TargetNotReached" and "max_rounds" in past_budget.message
    # The budget is the sweep's, fixed when it started: a later run's bigger one does not apply.
    bigger = sweep_config("sweep.target_f1=1.0", "sweep.max_rounds=5")
    refused = sweep(config=bigger, sweep_id=result.sweep_id, round_number=3, return_state=True)
    assert refused.name == "TargetNotReached" and "--continue" in refused.message
    assert list(record(result.sweep_id)[2]) == [1, 2]
    storage = f"sqlite:///{tuneloop_home / 'optuna.db'}"
    assert len(optuna.load_study(study_name=result.sweep_id, storage=storage).trials) == 6
    # Only the deliberate extension runs more, and it is recorded; --json exits 5 like the plain output.
    extended = CliRunner().invoke(app, ["sweep", "--continue", result.sweep_id, "--max-rounds", "3", "--json"])
    assert extended.exit_code == 5, extended.output
    payload = json.loads(extended.stdout.strip().splitlines()[-1])
    assert payload["status"] == "budget_spent" and payload["rounds"] == 3 and payload["trials"] == 9
    state, trials, rounds = record(result.sweep_id)
    assert list(rounds) == [1, 2, 3] and state.budget.max_rounds == 3 and len(trials) == 9
    [change] = state.budget.history
    assert (change["from"]["max_rounds"], change["to"]["max_rounds"]) == (2, 3)
    shrink = CliRunner().invoke(app, ["sweep", "--continue", result.sweep_id, "--max-rounds", "1"])
    assert shrink.exit_code == 2 and "would shrink it" in shrink.output


def test_reachable_target_stops_after_round_one(sweep_config: Callable[..., SweepPipelineConfig]) -> None:
    result = sweep(config=sweep_config("sweep.target_f1=0.0", "sweep.trials_per_round=2"))
    assert result.outcome == "target_met" and result.rounds == 1 and result.trials == 2
    assert result.best_model_path and Path(result.best_model_path, "tuneloop.json").is_file()
    # Target met, no champion yet: the best trial becomes the champion, usable by name.
    assert result.promotion.decision == "promoted" and result.promotion.champion == "1"
    predicted = CliRunner().invoke(
        app, ["predict", "--model", "models:/tuneloop-classifier@champion", "--text", "refund my invoice", "--json"]
    )
    assert predicted.exit_code == 0, predicted.output
    [row] = json.loads(predicted.stdout.strip().splitlines()[-1])["predictions"]
    assert row["label"] in ("account", "billing", "shipping", "technical")
    again = CliRunner().invoke(app, ["promote", "--version", "1"])
    nothing = CliRunner().invoke(app, ["rollback"])
    missing = CliRunner().invoke(app, ["predict", "--model", "models:/tuneloop-classifier@previous", "--text", "x"])
    assert again.exit_code == 2 and "already the champion" in again.output
    assert nothing.exit_code == 2 and "Nothing to roll back to" in nothing.output
    assert missing.exit_code == 2 and "has no alias @previous" in missing.output
    assert "Traceback" not in again.output + nothing.output + missing.output


def test_cross_validated_trials_feed_the_pruner_their_pooled_score_and_the_best_is_refit_and_registered(
    sweep_config: Callable[..., SweepPipelineConfig], tuneloop_home: Path
) -> None:
    """sweep.cross_validation=always: each trial trains 2 folds of train + validation in lockstep;
    the pruner hears each epoch's out-of-fold score over every row, which is the trial's history and
    score; no trial keeps a model, so the best is refit on train + validation. The TF-IDF baseline
    competes out of fold on the same folds, row by row, and beats the tiny model: it is registered."""
    config = sweep_config(
        "promotion.baseline_competes=true",
        "sweep.cross_validation=always",
        "sweep.folds=2",
        "sweep.trials_per_round=2",
        "sweep.max_rounds=1",
        "sweep.target_f1=1.0",
        "sweep.search=[learning_rate]",
        "train.epochs=2",
    )
    result = sweep(config=config)
    assert result.outcome == "budget_spent" and result.trials == 2
    state = load_sweep(config.sweep, result.sweep_id)
    assert state is not None
    rows = state.splits.train.rows + state.splits.validation.rows
    study = optuna.load_study(study_name=result.sweep_id, storage=f"sqlite:///{tuneloop_home / 'optuna.db'}")
    for trial, frozen in zip(study_trials(sweep_study(state)), study.trials, strict=True):
        assert trial.state == "complete" and trial.folds == 2 and trial.model_path is None
        scores = {record["epoch"]: record["val"]["f1_macro"] for record in trial.history}
        assert frozen.intermediate_values == scores and list(scores) == [1, 2]
        assert trial.score == scores[trial.best_epoch]
        assert trial.predictions, "out of fold: every row"
        pool = pd.concat([pd.read_parquet(state.splits.train.path), pd.read_parquet(state.splits.validation.path)])
        out_of_fold = pd.read_parquet(trial.predictions)
        assert out_of_fold["label"].tolist() == pool["label"].tolist(), "in the pool's row order"
        folder = Path(trial.predictions).parent
        assert not list(folder.glob("fold-*/checkpoints")), "a finished trial keeps no fold checkpoints"
    assert result.refit and result.refit.refit and result.refit.rows == rows
    assert "2-fold cross-validation" in result.refit.reason
    assert result.best_model_path == str(Path(state.folder) / "candidate" / "model")
    assert json.loads(Path(result.best_model_path, "tuneloop.json").read_text())["refit"] is True
    assert result.best_test and 0 <= result.best_test["f1_macro"] <= 1
    client = mlflow.MlflowClient(f"sqlite:///{tuneloop_home / 'mlflow.db'}")
    [best] = client.search_runs(
        [client.get_run(result.parent_run_id).info.experiment_id], f"tags.trial_number = '{result.best_trial}'"
    )
    assert best.data.tags["refit"] == "true" and best.data.metrics["refit/rows"] == rows
    # The baseline, cross-validated on the trials' folds, pairs row by row with the best trial's
    # out-of-fold predictions: the paired difference is the difference of the two pooled scores.
    family = result.family
    assert family and family.family == "baseline" and family.difference and family.difference.high < 0
    [trial] = [trial for trial in study_trials(sweep_study(state)) if trial.number == result.best_trial]
    baseline = pd.read_csv(Path(state.folder) / "baseline" / "val_predictions.csv", dtype=str)
    assert len(baseline) == rows and family.difference.delta == pytest.approx(
        trial.score - f1_score(baseline["label"], baseline["predicted"], average="macro"), abs=1e-6
    )
    assert result.promotion and result.promotion.version, "the baseline is registered"
    version = client.get_model_version("tuneloop-classifier", result.promotion.version.version)
    assert version.tags["model_family"] == "baseline" and version.tags["sweep_id"] == result.sweep_id
    assert client.get_run(version.run_id).data.tags["mlflow.parentRunId"] == result.parent_run_id
    assert result.promotion.decision == "rejected", "the baseline misses the target too: registered only"


def test_a_parameter_the_user_set_is_not_searched(
    sweep_config: Callable[..., SweepPipelineConfig], tuneloop_home: Path
) -> None:
    config = sweep_config(
        "sweep.search=[learning_rate, weight_decay, warmup_epochs]",  # the default search
        "train.learning_rate=0.0003",
        "train.epochs=1",
        "sweep.target_f1=1.0",
        "sweep.max_rounds=1",
        "sweep.trials_per_round=2",
        "sweep.pruner=auto",
    )
    result = sweep(config=config)
    assert [line.split()[0] for line in result.searched] == ["weight_decay", "warmup_epochs"]
    study = optuna.load_study(study_name=result.sweep_id, storage=f"sqlite:///{tuneloop_home / 'optuna.db'}")
    assert [set(trial.params) for trial in study.trials] == [{"weight_decay", "warmup_epochs"}] * 2
    client = mlflow.MlflowClient(f"sqlite:///{tuneloop_home / 'mlflow.db'}")
    trials = client.search_runs(
        [client.get_run(result.parent_run_id).info.experiment_id], "tags.kind = 'trial'", max_results=10
    )
    assert {run.data.params["train.learning_rate"] for run in trials} == {"0.0003"}
    assert client.get_run(result.parent_run_id).data.params["sweep.pruner"] == "median", "auto, as it ran"
    assert all(len(trial.history) == 1 for trial in record(result.sweep_id)[1])


def test_searching_a_parameter_the_config_also_sets_is_refused(tiny_bert: Path, tuneloop_home: Path) -> None:
    data = ROOT / "data/sample/support_tickets.csv"
    answer = CliRunner().invoke(
        app,
        [
            "sweep",
            *("--config", str(ROOT / "data/sample/config.yaml"), "--data", str(data)),
            *("--set", f"model.candidates=[{tiny_bert}]", "--set", "train.epochs=1"),
            *("--set", "sweep.search=[learning_rate, epochs]"),
        ],
    )
    assert answer.exit_code == 2, answer.output
    assert "searches epochs, which the config also sets (train.epochs=1)" in answer.output
    assert "Traceback" not in answer.output
    assert not (tuneloop_home / "sweeps").exists(), "refused before any work"


@pytest.mark.drill
def test_hopeless_learning_rate_is_pruned_before_its_last_epoch(tmp_path: Path) -> None:
    """Pruning needs trials that learn at different speeds: the tiny random BERT learns nothing in a
    few steps of the sample (every trial predicts one class), so this test fine-tunes the packaged
    MiniLM on 40 tickets per class (seconds an epoch)."""
    import pandas as pd

    from tasks.model.resolve import resolve_model

    tickets = pd.read_csv(ROOT / "data/sample/support_tickets.csv", dtype=str)
    known = tickets[tickets["category"].isin(["account", "billing", "shipping", "technical"])]
    small = known.groupby("category").head(40)
    small.to_csv(tmp_path / "tickets.csv", index=False)
    config = configs.sweep_config(
        Path(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path),
        f"data.path={tmp_path / 'tickets.csv'}",
        "split.train_fraction=0.6",
        "split.validation_fraction=0.2",
        "split.test_fraction=0.2",
        "train.batch_size=16",
        "sweep.target_f1=1.0",
        "sweep.max_rounds=1",
        "sweep.trials_per_round=4",
        "sweep.pruner=median",
        "train.epochs=4",
        "sweep.search=[learning_rate]",
        "sweep.learning_rate_min=1e-7",
        "sweep.learning_rate_max=1e-3",
        "sweep.sampler=random",
        "sweep.seed=3",
    )
    result = sweep(config=config)
    trials = [trial for trial in record(result.sweep_id)[1] if trial.round == 1]
    pruned = [trial for trial in trials if trial.state == "pruned"]
    assert pruned, [(t.params, t.score, t.state) for t in trials]
    assert all(len(trial.history) < 4 for trial in pruned)
    assert result.pruned == len(pruned)
    finished = [trial.score for trial in trials if trial.state == "complete"]
    assert max(trial.score for trial in pruned) < max(finished), "the pruned ones were the worse ones"


def test_budget_in_trials_caps_the_rounds(sweep_config: Callable[..., SweepPipelineConfig]) -> None:
    config = sweep_config("sweep.target_f1=1.0", "sweep.max_rounds=5", "sweep.max_trials=4")
    state = sweep(config=config, return_state=True)
    assert state.name == "TargetNotReached" and state.is_completed()
    result = state.result()
    assert result.outcome == "budget_spent" and result.trials == 4 and result.rounds == 2
    assert state.message == result.message
    assert "max_trials" in result.message


@pytest.mark.parametrize(
    "bad",
    [
        ["sweep.learning_rate_min=0.1", "sweep.learning_rate_max=0.01"],
        ["sweep.metric=accuracy"],
        ["sweep.cross_validation=always", "train.refit=never"],  # folds keep no model: the best must be refit
    ],
)
def test_bad_sweep_settings_are_rejected(sweep_config: Callable[..., SweepPipelineConfig], bad: list[str]) -> None:
    from tasks.core.errors import ConfigError

    with pytest.raises(ConfigError):
        sweep_config(*bad)


def test_next_candidate_escalation_moves_to_the_runner_up(
    sweep_config: Callable[..., SweepPipelineConfig], tiny_bert: Path, tmp_path: Path
) -> None:
    import json

    from tests.helpers.models import build_tiny_bert

    second = build_tiny_bert(tmp_path / "second", ["ticket order refund app"], hidden_size=48)
    config = sweep_config(
        "sweep.target_f1=1.0",
        "sweep.trials_per_round=1",
        "sweep.escalation=[next_candidate]",
        f"model.candidates=[{tiny_bert}, {second}]",
    )
    result = sweep(config=config, return_state=True).result()
    state, trials, _ = record(result.sweep_id)
    assert [model.base_model for model in state.candidates] == [state.model.base_model] + [
        m.base_model for m in state.candidates[1:]
    ]
    used = [json.loads(Path(trial.model_path, "tuneloop.json").read_text())["base_model"] for trial in trials]
    assert used == [state.candidates[0].base_model, state.candidates[1].base_model]


def test_default_escalation_grows_the_next_round(sweep_config: Callable[..., SweepPipelineConfig]) -> None:
    config = sweep_config(
        "sweep.target_f1=1.0",
        "sweep.trials_per_round=2",
        "sweep.escalation=[more_trials, more_epochs, widen]",
    )
    result = sweep(config=config, return_state=True).result()
    trials = record(result.sweep_id)[1]
    assert [sum(trial.round == number for trial in trials) for number in (1, 2)] == [2, 3]
    assert max(trial.params["epochs"] for trial in trials if trial.round == 2) <= 3


def test_gpu_limit_check_names_a_missing_or_inactive_limit() -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    assert "prefect gcl create no-such-limit --limit 1" in gpu_limit_problem("no-such-limit")
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="gpu-ready", limit=1))
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="gpu-off", limit=1, active=False))
    assert gpu_limit_problem("gpu-ready") is None
    assert "is inactive" in gpu_limit_problem("gpu-off")


def trial_spans(result: SweepResult) -> list[tuple[float, float]]:
    """(start, end) of each trial's training, in start order."""
    trials = record(result.sweep_id)[1]
    return sorted((trial.started_at, trial.started_at + trial.seconds) for trial in trials)


@pytest.mark.gpu
def test_gpu_trials_hold_the_gpu_limit_one_at_a_time(sweep_config: Callable[..., SweepPipelineConfig]) -> None:
    import torch
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here")
    one_round = ("sweep.target_f1=1.0", "sweep.max_rounds=1", "sweep.max_concurrent_trials=3")
    with pytest.raises(ConfigError, match="no such concurrency limit"):
        sweep(config=sweep_config(*one_round, "sweep.gpu_concurrency_limit=gpu-missing"))
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="one-gpu", limit=1))
    held = sweep(config=sweep_config(*one_round, "sweep.gpu_concurrency_limit=one-gpu"))
    spans = trial_spans(held)
    assert len(spans) == 3 and all(later[0] >= earlier[1] for earlier, later in pairwise(spans))
    free = trial_spans(sweep(config=sweep_config(*one_round)))
    assert any(later[0] < earlier[1] for earlier, later in pairwise(free)), "without it they overlap"


def test_gpu_slot_lets_one_trial_at_a_time_train() -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="one-slot", limit=1))
    config = SweepConfig(gpu_concurrency_limit="one-slot")

    def train_for_a_second(on_gpu: bool) -> tuple[float, float]:
        with gpu_slot(config, on_gpu=on_gpu):
            started = time.time()
            time.sleep(1)
            return started, time.time()

    with ThreadPoolExecutor(3) as pool:
        held = sorted(pool.map(train_for_a_second, [True] * 3))
        free = sorted(pool.map(train_for_a_second, [False] * 3))
    assert all(later[0] >= earlier[1] for earlier, later in pairwise(held)), held
    assert any(later[0] < earlier[1] for earlier, later in pairwise(free)), "without a GPU the limit is not held"
    missing = SweepConfig(gpu_concurrency_limit="missing-slot")
    with pytest.raises(Exception, match="missing-slot"), gpu_slot(missing, on_gpu=True):
        pass


def test_a_precision_this_machine_lacks_stops_the_sweep_before_any_work(tiny_bert: Path, tuneloop_home: Path) -> None:
    data = ROOT / "data/sample/support_tickets.csv"
    settings = [f"model.candidates=[{tiny_bert}]", "train.device=cpu", "train.precision=bf16"]  # on every machine
    answer = CliRunner().invoke(app, ["sweep", "--data", str(data), *[part for s in settings for part in ("--set", s)]])
    assert answer.exit_code == 2 and "train.precision=bf16 needs a CUDA GPU" in answer.output
    assert "Traceback" not in answer.output
    assert not (tuneloop_home / "sweeps").exists(), "no sweep folder, no split, no trial"


@pytest.mark.drill
def test_run_locally_each_trial_is_a_trial_flow_run_of_the_round_two_at_a_time(
    sweep_config: Callable[..., SweepPipelineConfig], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two at a time, each trial runs in a process of its own: two Trainers in one process share
    accelerate's global state, and one's set-up reset it under the other ("AcceleratorState object
    has no attribute distributed_type": a failed trial). On a host with two GPUs (named here by
    CUDA_VISIBLE_DEVICES; without a GPU the trials still train on the CPU) the two at once hold
    one GPU each, and the round's process holds one of its own only to screen the models and to
    score the best trial (its CUDA calls), not while the trials train."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterParentFlowRunId

    import flows.sweep
    from tasks.core import gpus

    held_by_the_round: dict[str, str | None] = {}

    def holding(step: str, work: Callable[..., Any]) -> Callable[..., Any]:
        def step_holding_its_gpu(*args: Any, **kwargs: Any) -> Any:  # the GPU this process sees, if it holds it
            seen = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            free = gpus.take_free([seen], gpus.lock_folder())
            if free is not None:
                os.close(free[1])
            held_by_the_round[step] = None if free else seen
            return work(*args, **kwargs)

        return step_holding_its_gpu

    for step in ("select_base_model", "evaluate_best_trial"):
        monkeypatch.setattr(flows.sweep, step, holding(step, getattr(flows.sweep, step)))
    monkeypatch.setattr(gpus, "cuda_started", lambda: False)  # on a GPU host too: as in a fresh process
    # trials of a few seconds: the first trial's imports (torch, transformers) delay the second's start by ~2 s
    one_round = ("sweep.target_f1=1.0", "sweep.max_rounds=1", "sweep.max_concurrent_trials=2")
    longer = ("train.batch_size=8", "sweep.epochs_min=2", "sweep.epochs_max=2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("TUNELOOP_GPU_LOCKS", str(tmp_path))
    state = sweep(config=sweep_config(*one_round, *longer), return_state=True)
    result = state.result()
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["trial"])),
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[state.state_details.flow_run_id])
            ),
        )
    assert sorted(run.name for run in runs) == [f"{result.sweep_id} trial {n}" for n in range(3)]
    assert all(run.state.is_completed() for run in runs)
    first, second, third = sorted(runs, key=lambda run: run.parameters["trial_number"])
    assert first.start_time < second.end_time and second.start_time < first.end_time, "the first two overlapped"
    assert third.start_time >= min(first.end_time, second.end_time), "the third waited for a free slot"
    trials = record(result.sweep_id)[1]
    assert [trial.state for trial in trials] == ["complete"] * 3, [(t.state, t.error) for t in trials]
    assert len({run.parent_task_run_id for run in runs}) == 3, "each trial in a task run of the round"
    taken = [trial.user_attrs.get("gpu") for trial in sweep_study(record(result.sweep_id)[0]).trials]
    assert set(taken[:2]) == {"0", "1"} and taken[2] in ("0", "1"), f"one GPU each at once: {taken}"
    assert held_by_the_round == {"select_base_model": "0", "evaluate_best_trial": "0"}


@pytest.mark.usefixtures("first_gpu_held")
def test_run_locally_one_at_a_time_the_sweep_holds_a_gpu_no_other_training_holds_for_its_trials(
    sweep_config: Callable[..., SweepPipelineConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One at a time, trials train in the sweep's process, where CUDA starts before the first trial
    (checking the trials' device): on a host with two GPUs where another training holds the first,
    every trial is on the second, which the sweep took."""
    import torch

    from tasks.core import gpus

    started: list[bool] = []

    def is_available() -> bool:  # as on a GPU host: the first CUDA call starts the driver (not an NVML count)
        if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1":
            started.append(True)
        return False

    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    monkeypatch.setattr(gpus, "cuda_started", lambda: bool(started))
    result = sweep(config=sweep_config("sweep.target_f1=1.0", "sweep.max_rounds=1", "sweep.trials_per_round=2"))
    assert [trial.user_attrs.get("gpu") for trial in sweep_study(record(result.sweep_id)[0]).trials] == ["1", "1"]


def test_a_new_sweep_answers_bad_data_at_once_while_every_gpu_of_its_host_is_held(
    sweep_config: Callable[..., SweepPipelineConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep checks its settings and its data (no CUDA call) before it takes a GPU: on a host
    whose two GPUs other trainings hold, a sweep of one-class data says so at once instead of waiting
    for a GPU first, and the same sweep of good data waits for one before its model screening."""
    import pandas as pd

    from tasks.core import gpus
    from tasks.core.errors import DataValidationError

    monkeypatch.setattr(gpus, "cuda_started", lambda: False)  # on a GPU host too: as in a fresh process
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("TUNELOOP_GPU_LOCKS", str(tmp_path / "locks"))
    holders = [hold_a_gpu("0,1") for _ in range(2)]
    try:
        assert sorted(gpu for _, gpu in holders) == ["0", "1"]
        waited: list[str] = []
        take_free = gpus.take_free

        def take_or_give_up(*args: object) -> object:  # every GPU held: give up instead of waiting
            taken = take_free(*args)  # type: ignore[arg-type]
            if taken is None:
                waited.append("waited")
                raise TimeoutError("the sweep waited for a GPU")
            return taken

        monkeypatch.setattr(gpus, "take_free", take_or_give_up)
        one_class = tmp_path / "one-class.csv"
        table = pd.read_csv(ROOT / "data/sample/support_tickets.csv")
        table.assign(category="billing").to_csv(one_class, index=False)
        with pytest.raises(DataValidationError, match="min_classes"):
            sweep(config=sweep_config(f"data.path={one_class}"))
        assert waited == [], "the data was answered before a GPU was asked for"
        with pytest.raises(TimeoutError, match="waited for a GPU"):
            sweep(config=sweep_config())
        assert waited == ["waited"]
    finally:
        for holder, _ in holders:
            holder.kill()


def test_a_round_of_a_sweep_its_storage_does_not_hold_is_refused_and_starts_nothing(
    sweep_config: Callable[..., SweepPipelineConfig], tuneloop_home: Path
) -> None:
    with pytest.raises(ConfigError, match="No sweep 'sweep-nope' in the Optuna storage sqlite:"):
        sweep(config=sweep_config(), sweep_id="sweep-nope", round_number=2)
    assert not (tuneloop_home / "sweeps").exists(), "a given sweep id never starts a new sweep"


def test_a_stopped_round_or_trial_leaves_no_mlflow_run_running_and_the_next_run_takes_it_over(
    tuneloop_home: Path,
) -> None:
    """A sweep's parent run is driven by the round that runs, a trial's run by its trial flow run:
    when that flow run fails, crashes or is cancelled (Stop in the Prefect UI) its hooks end the
    MLflow run FAILED or KILLED, instead of leaving it RUNNING for good; the flow run that continues
    takes the run over (RUNNING again, tagged with it, the old error gone)."""
    from prefect import flow
    from prefect.runtime import flow_run

    from flows.trial import trial
    from tasks.tracking.live import drive_run, mark_failed, mark_killed
    from tasks.tracking.store import ensure_experiment

    for stopped in (sweep, trial):
        assert stopped.on_cancellation_hooks == [mark_killed], stopped.name
        assert stopped.on_crashed_hooks == stopped.on_failure_hooks == [mark_failed], stopped.name
    target = ensure_experiment("stopped")
    client = mlflow.MlflowClient(target.uri)
    run_id = client.create_run(target.experiment_id).info.run_id

    @flow(on_failure=[mark_failed])
    def failing_round() -> None:
        drive_run(target, client.get_run(run_id))
        raise RuntimeError("CUDA out of memory")

    assert failing_round(return_state=True).is_failed()
    ended = client.get_run(run_id)
    assert ended.info.status == "FAILED" and "CUDA out of memory" in ended.data.tags["error"]

    @flow
    def next_round() -> str:
        drive_run(target, client.get_run(run_id))
        return str(flow_run.id)

    continued_by = next_round()
    resumed = client.get_run(run_id)
    assert resumed.info.status == "RUNNING" and "error" not in resumed.data.tags
    assert resumed.data.tags["prefect.flow_run_id"] == continued_by
