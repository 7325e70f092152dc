"""What a sweep's rounds share: the sweep's setup and budget (kept in its study: tasks/sweep/record.py),
each trial's result, the decision after a round and the sweep's result. The bottom of tasks/sweep/:
it imports no sweep module."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from tasks.core.home import tuneloop_home
from tasks.data.split import SplitReport
from tasks.model.baseline import FamilyChoice
from tasks.model.evaluate import EvalReport
from tasks.model.refit import RefitReport
from tasks.model.resolve import ModelRef
from tasks.registry.versions import PromotionResult


class Budget(BaseModel):
    """The sweep's budget, fixed when it starts and stored with it; `history` records every
    deliberate extension (`tuneloop sweep --continue ID --max-rounds N`)."""

    max_rounds: int
    max_trials: int
    max_hours: float
    history: list[dict[str, Any]] = Field(default_factory=list)

    def limits(self) -> dict[str, float]:
        return {"max_rounds": self.max_rounds, "max_trials": self.max_trials, "max_hours": self.max_hours}


class SweepState(BaseModel):
    """What every round and trial of one sweep shares, kept in the sweep's study."""

    sweep_id: str
    folder: str
    started_at: datetime
    study_name: str
    storage: str = Field(description="The study's storage URL: in memory only, never stored (it may hold a password).")
    splits: SplitReport
    dataset_sha256: str = Field("", description="The validated dataset's hash, as on a training run.")
    model: ModelRef
    candidates: list[ModelRef] = Field(default_factory=list)
    parent_run_id: str
    budget: Budget
    host: str = Field("", description="The host the sweep started on (a SQLite storage is safe on that host only).")


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


def best_of(trials: list[TrialResult]) -> TrialResult | None:
    """The completed trial with the highest score."""
    scored = [trial for trial in trials if trial.state == "complete" and trial.score is not None]
    return max(scored, key=lambda trial: trial.score or 0.0, default=None)


def best_learning_rate(trials: list[TrialResult]) -> float | None:
    """The learning rate of the best finished trial so far, when the sweep searched it."""
    best = best_of(trials)
    return best.params.get("learning_rate") if best else None


class TrialResult(BaseModel):
    """One trial: its parameters, per-epoch scores, final score and state."""

    number: int
    round: int
    params: dict[str, Any]
    state: Literal["complete", "pruned", "failed", "running", "waiting"]
    score: float | None
    history: list[dict[str, Any]]
    model_path: str | None
    seconds: float
    started_at: float | None = Field(None, description="When the trial started training (Unix seconds).")
    mlflow_run_id: str | None = None
    error: str | None = None
    plan: dict[str, Any] | None = Field(None, description="The training plan of a trial that finished.")
    best_epoch: int | None = Field(None, description="The epoch a finished trial chose.")
    predictions: str | None = Field(
        None, description="A finished trial's held-out predictions (out of fold when cross-validated)."
    )
    folds: int = Field(0, description="Folds the trial was cross-validated on (0: scored on the validation split).")
    retry_of: int | None = Field(None, description="The trial whose worker died and that this one retries.")


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
    best_model_path: str | None = Field(
        None, description="The candidate's model: the best trial's own, or its refit on train + validation."
    )
    best_test: dict[str, float] | None = Field(None, description="The candidate's test scores (per class left out).")
    refit: RefitReport | None = Field(None, description="Whether the candidate was refit, on what and why.")
    parent_run_id: str
    next_round: QueuedRound | None = None
    promotion: PromotionResult | None = None
    family: FamilyChoice | None = Field(None, description="Fine-tune or TF-IDF baseline: which was registered, why.")
    searched: list[str] = Field(default_factory=list, description="The searched space of the last round, in words.")


class BestModel(BaseModel):
    """The sweep's best trial, scored on the test split and logged with its model (its own, or its
    refit on train + validation)."""

    trial: TrialResult
    evaluation: EvalReport
    model_path: str
    refit: RefitReport
    run_id: str
    model_id: str | None = None  # its logged MLflow Model (None when tracking.log_model is off)
    family: FamilyChoice | None = None  # set when the baseline competed (tasks/sweep/candidate.py)
