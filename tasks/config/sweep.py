"""A sweep's search space, target, budget and escalation policy."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SearchedParameter = Literal[
    "learning_rate",
    "epochs",
    "batch_size",
    "weight_decay",
    "warmup_epochs",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "method",
]


MAX_CONCURRENT_TRIALS = 64

Escalation = Literal["more_trials", "more_epochs", "widen", "full_finetune", "next_candidate"]


class SweepConfig(BaseModel):
    """The search space, the target, the budget, and how each new round escalates."""

    model_config = ConfigDict(extra="forbid")

    target_f1: float = Field(0.9, ge=0, le=1, description="Stop when a trial's validation score reaches this.")
    metric: Literal["f1_macro", "f1_weighted"] = Field(
        "f1_macro", description="Validation score the sweep optimises and compares with target_f1."
    )
    trials_per_round: int = Field(4, ge=1, le=200, description="Trials Optuna proposes per round.")
    max_rounds: int = Field(3, ge=1, le=100, description="Most rounds, the first included.")
    max_trials: int = Field(24, ge=1, le=10_000, description="Most trials over all rounds.")
    max_hours: float = Field(
        12.0, gt=0, le=720, description="Most hours from the sweep's start; no round starts after that."
    )
    max_concurrent_trials: int = Field(
        1,
        ge=1,
        le=MAX_CONCURRENT_TRIALS,
        description="Trials run at the same time (flow runs on the work pool; task runs of the round when run "
        "locally).",
    )
    trial_deployment: str | None = Field(
        None,
        max_length=200,
        pattern=r"^[^/]+/[^/]+$",
        description="Run from a deployment: the deployment (flow/name, e.g. trial/gpu) whose flow runs run the "
        "trials, each placed by its work pool; unset: trials run in the round's own process.",
    )
    requeue: Literal["run_deployment", "trigger"] = Field(
        "run_deployment",
        description="Run from a deployment, how the next round is queued: by this flow run (run_deployment, "
        "idempotent per round), or by the deployment's trigger on the event tuneloop.sweep.below-threshold "
        "(trigger). Local runs continue in the same process either way.",
    )
    gpu_concurrency_limit: str | None = Field(
        None,
        description="Name of a Prefect global concurrency limit that "
        "each trial on a GPU occupies (strict: it must exist); unset: none.",
    )
    storage: str | None = Field(
        None,
        description="Optuna storage URL (any SQLAlchemy URL); unset: the environment's TUNELOOP_OPTUNA_STORAGE, "
        "else optuna.db in the tuneloop home folder (TUNELOOP_HOME, default .tuneloop).",
    )
    sampler: Literal["tpe", "gp", "random"] = Field(
        "tpe",
        description="Optuna sampler (seeded): tpe (tree-structured Parzen estimator), gp (Gaussian-process "
        "Bayesian optimisation: few, continuous parameters), or random.",
    )
    pruner: Literal["auto", "median", "successive_halving", "none"] = Field(
        "auto",
        description="Stops hopeless trials on their per-epoch validation score: median (a trial clearly below "
        "the median of the finished trials at the same epoch, by more than the validation split's noise), "
        "successive_halving (Optuna's, aggressive), none; auto: median, and none with sampler gp (which learns "
        "from completed trials only).",
    )
    pruning_min_epochs: int = Field(
        1,
        ge=1,
        le=100,
        description="The earliest epoch at which the pruner may stop a trial; raise it when good "
        "configurations start slowly (little data, low learning rates, warmup).",
    )
    pruning_min_steps: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Optimizer steps a trial makes after its learning-rate warmup before the pruner may stop it "
        "(0: no such floor). On little data an epoch is a few steps and a score after so few says little: a floor "
        "(e.g. 20) lets slow starters show what they reach, at the cost of more epochs.",
    )
    cross_validation: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Score each trial by k-fold cross-validation of train + validation instead of the validation "
        "split alone: `folds` models per trial, trained in lockstep, the pruner and the epoch choice fed the "
        "out-of-fold score of every labelled row; the best trial is then refit on train + validation. auto: "
        "when the validation split has fewer than 300 rows (too few to tell trials apart) and train.refit is "
        "not never.",
    )
    folds: int = Field(5, ge=2, le=20, description="Folds of a cross-validated trial (each trains one model).")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed of the sampler.")
    startup_trials: int = Field(
        8,
        ge=1,
        le=1000,
        description="Start-up trials before TPE or GP starts modelling the space (GP counts completed ones only): "
        "points of one space-filling (scrambled Sobol') design, so the first 4 try one value from each quarter of "
        "every searched range, the first 8 one from each eighth.",
    )
    search: list[SearchedParameter] = Field(
        default=["learning_rate", "weight_decay", "warmup_epochs"],
        min_length=1,
        description="Which hyperparameters to search; the others keep the train section's values.",
    )
    learning_rate_min: float = Field(1e-5, gt=0, le=1, description="Lower bound of the learning rate (log scale).")
    learning_rate_max: float = Field(1e-3, gt=0, le=1, description="Upper bound of the learning rate (log scale).")
    epochs_min: int = Field(1, ge=1, le=100, description="Fewest epochs a trial trains.")
    epochs_max: int = Field(4, ge=1, le=100, description="Most epochs a trial trains.")
    batch_sizes: list[int] = Field(default=[16, 32], min_length=1, description="Batch sizes to try.")
    weight_decay_max: float = Field(0.1, ge=0, le=1, description="Upper bound of the weight decay.")
    warmup_epochs_max: float = Field(1.0, ge=0, le=100, description="Upper bound of the warmup, in epochs.")
    lora_ranks: list[int] = Field(default=[4, 8, 16, 32], min_length=1, description="LoRA ranks.")
    lora_alphas: list[int] = Field(default=[8, 16, 32, 64], min_length=1, description="LoRA alphas.")
    lora_dropout_max: float = Field(0.3, ge=0, lt=1, description="Upper bound of the LoRA dropout.")
    methods: list[Literal["full", "lora"]] = Field(
        default=["full", "lora"], min_length=1, description="Methods to try when `method` is searched."
    )
    escalation: list[Escalation] = Field(
        default=["more_trials", "widen"],
        description=(
            "What each new round changes: more_trials (x1.5), more_epochs (+1 to epochs_max, when epochs is "
            "searched), widen (learning-rate range x/÷3 around the best trial), full_finetune (LoRA to full), "
            "next_candidate (the next base model in the selection's ranking)."
        ),
    )

    @model_validator(mode="after")
    def _ranges_ordered(self) -> SweepConfig:
        if self.learning_rate_min > self.learning_rate_max or self.epochs_min > self.epochs_max:
            raise ValueError("sweep ranges need min <= max (learning_rate_min/max, epochs_min/max)")
        return self

    @model_validator(mode="after")
    def _gp_unpruned(self) -> SweepConfig:
        if self.sampler == "gp" and self.pruner not in ("auto", "none"):
            raise ValueError(
                f"sweep.sampler=gp learns from completed trials only: a trial that sweep.pruner={self.pruner} "
                "stops teaches it nothing, and it proposes the same configuration again and again. Use "
                "sweep.pruner=auto or none with gp, or sweep.sampler=tpe to prune."
            )
        return self

    @property
    def pruning(self) -> Literal["median", "successive_halving", "none"]:
        """The pruner the study uses: `pruner`, with auto resolved (median; none with gp)."""
        if self.pruner == "auto":
            return "none" if self.sampler == "gp" else "median"
        return self.pruner


DEFAULT_SEARCH = SweepConfig.model_fields["search"].default
