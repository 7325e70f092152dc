"""A sweep's rounds: the escalation policy (what each new round changes), the budget, and the
decision after each round: target met, next round, or budget spent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tasks.config.sweep import SweepConfig
from tasks.core.metrics import noise_margin
from tasks.model.refit import SMALL_VALIDATION_ROWS
from tasks.sweep.state import Budget, RoundDecision, SweepState, TrialResult, best_of


def trial_folds(config: SweepConfig, refit: str, validation_rows: int) -> int:
    """How many folds each trial trains (sweep.cross_validation, sweep.folds); 0: the trial trains
    once and is scored on the validation split. auto folds small validation splits unless
    train.refit=never (a cross-validated trial has no model of its own to keep)."""
    if config.cross_validation == "always":
        return config.folds
    small = validation_rows < SMALL_VALIDATION_ROWS
    return config.folds if config.cross_validation == "auto" and small and refit != "never" else 0


def scored_rows(config: SweepConfig, refit: str, state: SweepState) -> int:
    """How many rows a trial's score is measured on: train + validation out of fold when trials are
    cross-validated, else the validation split."""
    validation = state.splits.validation.rows
    return validation + state.splits.train.rows if trial_folds(config, refit, validation) else validation


def folds_line(config: SweepConfig, refit: str, state: SweepState) -> str:
    """How the sweep's trials are scored, in words."""
    validation = state.splits.validation.rows
    folds = trial_folds(config, refit, validation)
    if not folds:
        return f"Trials are scored on the validation split ({validation} rows)."
    rows = scored_rows(config, refit, state)
    return (
        f"Trials are scored by {folds}-fold cross-validation of train + validation ({rows} rows out of fold; "
        f"the validation split alone has {validation}), and the best is refit on all of them."
    )


def trials_this_round(config: SweepConfig, budget: Budget, round_number: int, trials_so_far: int) -> int:
    """How many trials the round runs: the escalated count, within the sweep's trial budget."""
    return max(0, min(escalated(config, round_number).trials_per_round, budget.max_trials - trials_so_far))


def spent_budget(state: SweepState, round_number: int, trials_so_far: int) -> list[str]:
    """The limits of the sweep's stored budget that round `round_number`, starting now, would
    break (`trials_so_far`: every trial that ran, a retried one once)."""
    budget = state.budget
    hours = (datetime.now(UTC) - state.started_at).total_seconds() / 3600
    limits = (
        ("max_rounds", round_number > budget.max_rounds),
        ("max_trials", trials_so_far >= budget.max_trials),
        ("max_hours", hours >= budget.max_hours),
    )
    return [name for name, over in limits if over]


def decide(
    config: SweepConfig,
    state: SweepState,
    round_number: int,
    trials: list[TrialResult],
    trials_so_far: int,
    rows: int | None = None,
) -> RoundDecision:
    """Target met, next round, or budget spent: never loop without bound. `rows`: how many rows the
    trials' scores are measured on (scored_rows; default the validation split's)."""
    best = best_of(trials)
    best_score = best.score if best else None
    shown = f"{best_score:.4f}" if best_score is not None else "none"
    spent = spent_budget(state, round_number + 1, trials_so_far)
    if best is not None and best_score is not None and best_score >= config.target_f1:
        action, message = (
            "target_met",
            (
                f"Target reached in round {round_number}: best {config.metric} {shown} >= {config.target_f1} "
                f"(trial {best.number})."
            ),
        )
    elif spent:
        action, message = (
            "budget_spent",
            (
                f"Target not reached after {round_number} round(s) (best {config.metric} {shown} "
                f"< target {config.target_f1}); budget spent: {', '.join(spent)}."
            ),
        )
    else:
        action, message = (
            "next_round",
            (
                f"Round {round_number} best {config.metric} {shown} < target {config.target_f1}: "
                f"queuing round {round_number + 1}."
            ),
        )
    if best_score is not None:
        message += within_noise(best_score, config.target_f1, rows or state.splits.validation.rows)
    best_number = best.number if best else None
    return RoundDecision(action=action, message=message, best_score=best_score, best_trial=best_number)


def within_noise(best_score: float, target: float, rows: int) -> str:
    """A sentence to add when the best score is closer to the target than the `rows` it was measured on
    can tell: the target is then met or missed by luck, and more rounds mostly buy more lucky draws."""
    margin = noise_margin(target, rows)
    if abs(best_score - target) >= margin:
        return ""
    return (
        f" The gap to the target ({best_score - target:+.4f}) is within the noise of the trials' scores "
        f"(+-{margin:.4f} on {rows} rows): whether a trial meets the target is partly luck here. "
        "Give validation more rows (split.validation_fraction), or cross-validate the trials "
        "(sweep.cross_validation=always), to measure trials closer."
    )


def round_table(trials: list[TrialResult]) -> list[dict[str, Any]]:
    """One row per trial for the round's Prefect table artifact."""
    return [
        {
            "trial": trial.number,
            "round": trial.round,
            "state": trial.state,
            "score": None if trial.score is None else round(trial.score, 4),
            "epochs run": len(trial.history),
            "seconds": trial.seconds,
            **{key: value for key, value in trial.params.items()},
        }
        for trial in trials
    ]


def escalated(config: SweepConfig, round_number: int, best_learning_rate: float | None = None) -> SweepConfig:
    """The sweep config of round `round_number` (1 = as configured), after the escalation policy.
    `widen` centres the learning-rate range on the best trial so far (when one searched it) and
    widens it by 3x each way per round; without a best trial it widens the configured range."""
    steps = round_number - 1
    update: dict[str, Any] = {}
    if "more_trials" in config.escalation:
        update["trials_per_round"] = max(1, round(config.trials_per_round * 1.5**steps))
    if "more_epochs" in config.escalation:
        update["epochs_max"] = config.epochs_max + steps
    if "widen" in config.escalation and steps:
        low, high = (
            (best_learning_rate, best_learning_rate)
            if best_learning_rate
            else (config.learning_rate_min, config.learning_rate_max)
        )
        update["learning_rate_min"] = max(1e-7, low / 3**steps)
        update["learning_rate_max"] = min(1.0, high * 3**steps)
    if "full_finetune" in config.escalation and steps:
        update["methods"] = ["full"]
    return config.model_copy(update=update)
