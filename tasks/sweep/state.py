"""What a sweep's rounds share: the state on disk in the sweep's folder, each trial's result, the
decision after a round and the sweep's result. The bottom of tasks/sweep/: it imports no sweep module."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from tasks.core.home import tuneloop_home
from tasks.data.split import SplitReport
from tasks.model.evaluate import EvalReport
from tasks.model.resolve import ModelRef
from tasks.registry.versions import PromotionResult


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
    """How the next round was handed on (see tasks/sweep/requeue.py)."""

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


class TrialResult(BaseModel):
    """One trial: its parameters, per-epoch scores, final score and state."""

    number: int
    round: int
    params: dict[str, Any]
    state: Literal["complete", "pruned", "failed"]
    score: float | None
    history: list[dict[str, Any]]
    model_path: str | None
    seconds: float
    started_at: float | None = Field(None, description="When the trial started training (Unix seconds).")
    mlflow_run_id: str | None = None
    error: str | None = None
    plan: dict[str, Any] | None = Field(None, description="The training plan of a trial that finished.")


class SweepResult(BaseModel):
    """How a sweep (or this round of it) ended."""

    sweep_id: str
    outcome: Literal["target_met", "budget_spent", "next_round_queued", "already_claimed"]
    message: str
    rounds: int
    trials: int
    pruned: int
    best_score: float | None
    best_trial: int | None
    best_model_path: str | None
    parent_run_id: str
    next_round: QueuedRound | None = None
    promotion: PromotionResult | None = None
    searched: list[str] = Field(default_factory=list, description="The searched space of the last round, in words.")


class BestModel(BaseModel):
    """The sweep's best trial, scored on the test split and logged with its model."""

    trial: TrialResult
    evaluation: EvalReport
    run_id: str
    model_id: str | None = None  # its logged MLflow Model (None when tracking.log_model is off)
