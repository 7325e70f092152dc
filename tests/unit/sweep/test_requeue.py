from datetime import UTC, datetime, timedelta

from tasks.config.pipeline import SweepPipelineConfig
from tasks.config.sweep import SweepConfig
from tasks.data.load import DatasetRef
from tasks.data.split import SplitReport
from tasks.model.resolve import ModelRef
from tasks.sweep.requeue import below_threshold_event, round_guard
from tasks.sweep.state import RoundDecision, SweepState


def sweep_state(rounds: int = 1, trials_per_round: int = 2, hours_ago: float = 0.0, **claims: str) -> SweepState:
    table = DatasetRef(path="x.parquet", sha256="0" * 64, rows=10)
    return SweepState(
        sweep_id="sweep-test",
        folder="/tmp/sweep-test",
        started_at=datetime.now(UTC) - timedelta(hours=hours_ago),
        study_name="sweep-test",
        storage="sqlite://",
        splits=SplitReport(
            train=table,
            validation=table,
            test=table,
            class_counts={},
            overlap={},
            removed_for_leakage=0,
            seed=1,
            summary_path="s.json",
        ),
        model=ModelRef(base_model="tiny", path="/tmp/tiny", source="folder"),
        parent_run_id="parent",
        rounds=[{"round": n + 1, "trials": [{}] * trials_per_round} for n in range(rounds)],
        claims={key.removeprefix("r"): value for key, value in claims.items()},
    )


def test_next_round_within_budget_may_run() -> None:
    assert round_guard(SweepConfig(max_rounds=3), sweep_state(rounds=1), 2, "run-b") is None


def test_round_that_already_ran_or_was_claimed_by_another_run_is_skipped() -> None:
    ran = round_guard(SweepConfig(), sweep_state(rounds=2), 2, "run-c")
    claimed = round_guard(SweepConfig(), sweep_state(rounds=1, r2="run-b"), 2, "run-c")
    assert ran and ran.action == "already_claimed"
    assert claimed and claimed.action == "already_claimed" and "run-b" in claimed.message
    # The claimant itself, retried, goes on (its checkpointed trials resume).
    assert round_guard(SweepConfig(), sweep_state(rounds=1, r2="run-b"), 2, "run-b") is None


def test_no_round_starts_past_the_budget() -> None:
    rounds = round_guard(SweepConfig(max_rounds=2), sweep_state(rounds=2), 3, "run-d")
    trials = round_guard(SweepConfig(max_trials=4), sweep_state(rounds=2, trials_per_round=2), 3, "run-d")
    hours = round_guard(SweepConfig(max_hours=1), sweep_state(hours_ago=2), 2, "run-d")
    assert rounds and rounds.action == "budget_spent" and "max_rounds" in rounds.message
    assert trials and "max_trials" in trials.message
    assert hours and "max_hours" in hours.message


def test_below_threshold_event_carries_the_next_rounds_parameters_and_the_trigger_labels() -> None:
    config = SweepPipelineConfig(sweep=SweepConfig(requeue="trigger", target_f1=0.95))
    decision = RoundDecision(action="next_round", message="below", best_score=0.8, best_trial=3)
    event = below_threshold_event(config, "sweep-x", 2, decision, "sweep/weekly")
    assert event["event"] == "tuneloop.sweep.below-threshold"
    assert event["resource"]["tuneloop.sweep.requeue"] == "trigger"
    assert event["resource"]["tuneloop.sweep.deployment"] == "sweep/weekly"
    assert event["payload"]["best_f1"] == 0.8 and event["payload"]["target"] == 0.95
    parameters = event["payload"]["parameters"]
    assert parameters["sweep_id"] == "sweep-x" and parameters["round_number"] == 3
    assert SweepPipelineConfig.model_validate(parameters["config"]) == config
