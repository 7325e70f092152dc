from datetime import UTC, datetime, timedelta

from tasks.config.pipeline import SweepPipelineConfig
from tasks.config.sweep import SweepConfig
from tasks.data.load import DatasetRef
from tasks.data.split import SplitReport
from tasks.model.resolve import ModelRef
from tasks.sweep.requeue import below_threshold_event, budget_differences, budget_refusal
from tasks.sweep.rounds import decide
from tasks.sweep.state import Budget, RoundDecision, SweepState, TrialResult


def sweep_state(
    hours_ago: float = 0.0, storage: str = "sqlite://", validation_rows: int = 10, **budget: float
) -> SweepState:
    table = DatasetRef(path="x.parquet", sha256="0" * 64, rows=10)
    limits = {"max_rounds": 3, "max_trials": 24, "max_hours": 12.0, **budget}
    return SweepState(
        sweep_id="sweep-test",
        folder="/tmp/sweep-test",
        started_at=datetime.now(UTC) - timedelta(hours=hours_ago),
        study_name="sweep-test",
        storage=storage,
        splits=SplitReport(
            train=table,
            validation=table.model_copy(update={"rows": validation_rows}),
            test=table,
            class_counts={},
            overlap={},
            removed_for_leakage=0,
            seed=1,
            summary_path="s.json",
        ),
        model=ModelRef(base_model="tiny", path="/tmp/tiny", source="folder"),
        parent_run_id="parent",
        budget=Budget(**limits),
    )


def test_next_round_within_the_stored_budget_may_run() -> None:
    assert budget_refusal(sweep_state(), 2, trials_so_far=4) is None


def test_no_round_starts_past_the_stored_budget() -> None:
    rounds = budget_refusal(sweep_state(max_rounds=2), 3, trials_so_far=4)
    trials = budget_refusal(sweep_state(max_trials=4), 2, trials_so_far=4)
    hours = budget_refusal(sweep_state(hours_ago=2, max_hours=1), 2, trials_so_far=0)
    assert rounds and rounds.action == "budget_spent" and "max_rounds" in rounds.message
    assert "tuneloop sweep --continue sweep-test --max-rounds N" in rounds.message
    assert trials and "max_trials" in trials.message
    assert hours and "max_hours" in hours.message


def test_a_bigger_budget_in_a_later_runs_config_is_named_and_does_not_apply() -> None:
    state = sweep_state(max_rounds=1)
    assert budget_differences(SweepConfig(max_rounds=1, max_trials=24, max_hours=12), state) == []
    assert budget_differences(SweepConfig(max_rounds=3, max_trials=24, max_hours=12), state) == [
        "max_rounds=3 (stored: 1)"
    ]
    assert budget_refusal(state, 2, trials_so_far=1), "the stored budget decides, not the run's config"


def test_below_threshold_event_names_only_the_next_round_and_carries_the_trigger_labels() -> None:
    config = SweepPipelineConfig(sweep=SweepConfig(requeue="trigger", target_f1=0.95))
    decision = RoundDecision(action="next_round", message="below", best_score=0.8, best_trial=3)
    event = below_threshold_event(config, "sweep-x", 2, decision, "sweep/weekly")
    assert event["event"] == "tuneloop.sweep.below-threshold"
    assert event["resource"]["tuneloop.sweep.requeue"] == "trigger"
    assert event["resource"]["tuneloop.sweep.deployment"] == "sweep/weekly"
    assert event["payload"]["best_f1"] == 0.8 and event["payload"]["target"] == 0.95
    assert event["payload"]["parameters"] == {"sweep_id": "sweep-x", "round_number": 3}, "no config in an event"


def test_a_round_whose_best_is_within_the_validation_noise_of_the_target_says_so() -> None:
    def trial(score: float) -> TrialResult:
        return TrialResult(
            number=0, round=1, params={}, state="complete", score=score, history=[], model_path=None, seconds=1
        )

    config = SweepConfig(target_f1=0.95)
    state = sweep_state(validation_rows=600)  # two sampling errors near 0.95: +-0.0178
    near_miss = decide(config, state, 1, [trial(0.94)], trials_so_far=1)
    near_hit = decide(config, state, 1, [trial(0.96)], trials_so_far=1)
    far = decide(config, state, 1, [trial(0.90)], trials_so_far=1)
    assert (
        near_miss.action == "next_round"
        and "within the noise of the trials' scores (+-0.0178 on 600 rows)" in near_miss.message
    )
    assert near_hit.action == "target_met" and "(+0.0100)" in near_hit.message
    assert "noise" not in far.message
    assert "noise" not in decide(config, sweep_state(validation_rows=60_000), 1, [trial(0.94)], 1).message
