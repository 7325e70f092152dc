"""A sweep's rounds: the state every round shares (on disk in the sweep's folder), the trials run so
far, the budget, and the decision after each round: target met, next round, or budget spent."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from tasks.resolve import ModelRef
from tasks.search import TrialResult, escalated
from tasks.split import SplitReport
from tasks.workspace import tuneloop_home

if TYPE_CHECKING:
    from tasks.sweep import SweepConfig


class SweepState(BaseModel):
    """What every round of one sweep shares, kept on disk in the sweep's folder."""

    sweep_id: str
    folder: str
    started_at: datetime
    study_name: str
    storage: str
    splits: SplitReport
    dataset_sha256: str = Field("", description="The validated dataset's hash, as on a training run.")
    model: ModelRef
    candidates: list[ModelRef] = Field(default_factory=list)
    parent_run_id: str
    rounds: list[dict[str, Any]] = Field(default_factory=list)
    claims: dict[str, str] = Field(default_factory=dict, description="Round number -> the flow run that runs it.")

    @property
    def trial_count(self) -> int:
        """Trials run in the finished rounds."""
        return sum(len(entry["trials"]) for entry in self.rounds)


class RoundDecision(BaseModel):
    """What happens after a round."""

    action: Literal["target_met", "next_round", "budget_spent", "already_claimed"]
    message: str
    best_score: float | None
    best_trial: int | None
    searched: list[str] = Field(default_factory=list, description="The round's search space, in words.")


class QueuedRound(BaseModel):
    """How the next round was handed on (see tasks/requeue.py)."""

    round: int
    by: Literal["run_deployment", "trigger"]
    flow_run_id: str | None = None


def new_sweep_id() -> str:
    """A readable, unique sweep id."""
    return f"sweep-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def sweep_folder(sweep_id: str) -> Path:
    """The sweep's folder under the home folder (created)."""
    folder = tuneloop_home() / "sweeps" / sweep_id
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_state(state: SweepState) -> None:
    """Write the sweep's state file."""
    (Path(state.folder) / "state.json").write_text(state.model_dump_json(indent=2), encoding="utf-8")


def load_state(sweep_id: str) -> SweepState | None:
    """The sweep's state, or None for a new sweep."""
    path = tuneloop_home() / "sweeps" / sweep_id / "state.json"
    return SweepState.model_validate_json(path.read_text(encoding="utf-8")) if path.is_file() else None


def all_trials(state: SweepState) -> list[TrialResult]:
    """Every trial of every finished round."""
    return [TrialResult.model_validate(trial) for entry in state.rounds for trial in entry["trials"]]


def best_of(trials: list[TrialResult]) -> TrialResult | None:
    """The completed trial with the highest score."""
    scored = [trial for trial in trials if trial.state == "complete" and trial.score is not None]
    return max(scored, key=lambda trial: trial.score or 0.0, default=None)


def best_trial(state: SweepState) -> TrialResult | None:
    """The best finished trial over every round so far."""
    return best_of(all_trials(state))


def best_learning_rate(state: SweepState) -> float | None:
    """The learning rate of the best finished trial so far, when the sweep searched it."""
    best = best_trial(state)
    return best.params.get("learning_rate") if best else None


def trials_this_round(config: SweepConfig, round_number: int, trials_so_far: int) -> int:
    """How many trials the round runs: the escalated count, within the trial budget."""
    return max(0, min(escalated(config, round_number).trials_per_round, config.max_trials - trials_so_far))


def spent_budget(config: SweepConfig, state: SweepState, round_number: int) -> list[str]:
    """The budget limits that round `round_number`, starting now, would break."""
    hours = (datetime.now(UTC) - state.started_at).total_seconds() / 3600
    limits = (
        ("max_rounds", round_number > config.max_rounds),
        ("max_trials", state.trial_count >= config.max_trials),
        ("max_hours", hours >= config.max_hours),
    )
    return [name for name, over in limits if over]


def decide(config: SweepConfig, state: SweepState, round_number: int, trials: list[TrialResult]) -> RoundDecision:
    """Target met, next round, or budget spent: never loop without bound."""
    best = best_of(trials)
    best_score = best.score if best else None
    shown = f"{best_score:.4f}" if best_score is not None else "none"
    spent = spent_budget(config, state, round_number + 1)
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
    best_number = best.number if best else None
    return RoundDecision(action=action, message=message, best_score=best_score, best_trial=best_number)


def trial_batches(first_slot: int, count: int, concurrent: int) -> list[tuple[int, int]]:
    """(first slot, size) of the batches a round's `count` trials run in, at most `concurrent` at once."""
    return [(first_slot + start, min(concurrent, count - start)) for start in range(0, count, concurrent)]


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


def plot_trials(trials: list[TrialResult], metric: str, target: float, path: Path) -> Path:
    """Validation score by trial, coloured by round; pruned trials as crosses; the target as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    rounds = sorted({trial.round for trial in trials})
    colours = plt.get_cmap("viridis")([index / max(len(rounds) - 1, 1) for index in range(len(rounds))])
    for colour, round_number in zip(colours, rounds, strict=True):
        for state, marker in (("complete", "o"), ("pruned", "x")):
            points = [(t.number, t.score) for t in trials if t.round == round_number and t.state == state and t.score]
            if points:
                axes.scatter(
                    *zip(*points, strict=True),
                    color=colour,
                    marker=marker,
                    label=f"round {round_number}" + (" (pruned)" if state == "pruned" else ""),
                )
    axes.axhline(target, color="red", linestyle="--", linewidth=1, label=f"target {target}")
    axes.set_xlabel("trial")
    axes.set_ylabel(f"validation {metric}")
    axes.set_title("Sweep history")
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
