"""The search: what the sweep searches and keeps fixed, the persistent seeded Optuna study (its
space-filling start-up, its pruner), what each trial tries, the searched space in words, and
parameter importances."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from tasks.config.sweep import DEFAULT_SEARCH, SearchedParameter, SweepConfig
from tasks.config.train import TrainConfig
from tasks.core.errors import ConfigError
from tasks.core.metrics import sampling_error
from tasks.core.plots import pyplot, save_figure
from tasks.sweep.record import rdb_storage

# Parameter importances mean something only with a few completed trials.
IMPORTANCE_MIN_TRIALS = 5
# The median pruner: finished trials needed at an epoch before it judges there, and how many sampling
# errors of the validation score below their median a trial must be to be stopped.
PRUNING_MIN_TRIALS, PRUNING_ERRORS = 2, 2.0


def median_pruner(min_epoch: int, validation_rows: int) -> Any:
    """Stops a trial whose best score so far is below the median of the finished trials' scores at the
    same epoch (pruned trials included) by more than PRUNING_ERRORS sampling errors of a score on
    `validation_rows` rows. Optuna's MedianPruner compares with completed trials only, which after a
    dozen trials are the lucky good ones: it then stops nearly every new trial, good ones by noise
    alone, and the search stalls. Counting the pruned trials and a margin for noise keep it to
    trials that are clearly worse."""
    import numpy as np
    import optuna
    from optuna.trial import TrialState

    class NoiseAwareMedianPruner(optuna.pruners.BasePruner):
        def prune(self, study: Any, trial: Any) -> bool:
            step = trial.last_step
            if step is None or step < min_epoch:
                return False
            finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            others = [t.intermediate_values[step] for t in finished if step in t.intermediate_values]
            if len(others) < PRUNING_MIN_TRIALS:
                return False
            median = float(np.median(others))
            error = sampling_error(median, validation_rows)
            best = max(trial.intermediate_values.values())  # its epochs so far: step is the last
            return best < median - PRUNING_ERRORS * error

    return NoiseAwareMedianPruner()


def space_filling_start(then: Any, seed: int, startup: int) -> Any:
    """`then` (TPE or GP), whose first `startup` trials (by trial number) take their values from one
    scrambled Sobol' design seeded by `seed` instead of independent random draws: the first 4
    points of a Sobol' sequence put one value in each quarter of every parameter's range (on the log
    scale for the learning rate), so a round of 4 start-up trials always tries a low, a middle-low, a
    middle-high and a high learning rate, where 4 random draws often try three rates of one quarter
    (measured: see the README's sweep efficiency). The point is the trial's number, so trials asked
    by different processes, each with its own sampler, still take the one design's points. Trials
    after the start-up, and any parameter the design does not know, are `then`'s."""
    import optuna
    from scipy.stats import qmc

    dimensions = {name: index for index, name in enumerate(get_args(SearchedParameter))}
    design = qmc.Sobol(len(dimensions), scramble=True, rng=seed).random_base2(max(0, math.ceil(math.log2(startup))))

    def value(u: float, distribution: Any) -> Any:
        """The design's coordinate u in [0, 1) as a value of `distribution`."""
        if isinstance(distribution, optuna.distributions.CategoricalDistribution):
            return distribution.choices[min(int(u * len(distribution.choices)), len(distribution.choices) - 1)]
        low, high, step = distribution.low, distribution.high, distribution.step
        if isinstance(distribution, optuna.distributions.IntDistribution):
            count = (high - low) // step + 1
            return low + step * min(int(u * count), count - 1)
        if distribution.log:
            return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        drawn = low + u * (high - low)
        return drawn if step is None else min(high, low + round((drawn - low) / step) * step)

    class SpaceFillingStart(optuna.samplers.BaseSampler):
        def starting(self, trial: Any) -> bool:
            return trial.number < startup

        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            return {} if self.starting(trial) else then.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
            return {} if self.starting(trial) else then.sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, param_name: str, distribution: Any) -> Any:
            if self.starting(trial) and param_name in dimensions:
                return value(float(design[trial.number, dimensions[param_name]]), distribution)
            return then.sample_independent(study, trial, param_name, distribution)

        def before_trial(self, study: Any, trial: Any) -> None:
            then.before_trial(study, trial)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            then.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            then.reseed_rng()

    return SpaceFillingStart()


def study_sampler(config: SweepConfig, slot: int = 0) -> Any:
    """The sampler `sweep.sampler` names, seeded by `sweep.seed` and the trial's slot: each trial opens
    the study anew, so each needs its own seed. The two are mixed (not added), so sweeps with
    neighbouring seeds do not draw the same trials. TPE's and GP's start-up trials come from one
    space-filling design seeded by `sweep.seed` alone (every process must agree on it)."""
    import numpy as np
    import optuna

    seed = int(np.random.SeedSequence([config.seed, slot]).generate_state(1)[0])
    startup = config.startup_trials
    sampler = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }[config.sampler]()
    return sampler if config.sampler == "random" else space_filling_start(sampler, config.seed, startup)


def study_pruner(config: SweepConfig, validation_rows: int = 0) -> Any:
    """The pruner `sweep.pruner` names (auto resolved); `validation_rows` sizes the median pruner's
    margin for noise (0: none)."""
    import optuna

    return {
        "median": lambda: median_pruner(config.pruning_min_epochs, validation_rows),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=config.pruning_min_epochs),
        "none": lambda: optuna.pruners.NopPruner(),
    }[config.pruning]()


def open_study(config: SweepConfig, study_name: str, storage: str, slot: int = 0, validation_rows: int = 0) -> Any:
    """The persistent Optuna study (created on first use), with the sampler for trial slot `slot` and
    the pruner (`validation_rows`: see study_pruner)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=study_name,
        storage=rdb_storage(storage),
        direction="maximize",
        sampler=study_sampler(config, slot),
        pruner=study_pruner(config, validation_rows),
        load_if_exists=True,
    )


def suggest(trial: Any, config: SweepConfig, train: TrainConfig) -> dict[str, Any]:
    """The searched hyperparameters of one trial; the others come from the train section."""
    searched = set(config.search)
    params: dict[str, Any] = {}
    if "method" in searched:
        params["method"] = trial.suggest_categorical("method", config.methods)
    if "learning_rate" in searched:
        params["learning_rate"] = trial.suggest_float(
            "learning_rate", config.learning_rate_min, config.learning_rate_max, log=True
        )
    if "epochs" in searched:
        params["epochs"] = trial.suggest_int("epochs", config.epochs_min, config.epochs_max)
    if "batch_size" in searched:
        params["batch_size"] = trial.suggest_categorical("batch_size", config.batch_sizes)
    if "weight_decay" in searched:
        params["weight_decay"] = trial.suggest_float("weight_decay", 0.0, config.weight_decay_max)
    if "warmup_epochs" in searched:
        params["warmup_epochs"] = trial.suggest_float("warmup_epochs", 0.0, config.warmup_epochs_max)
    if params.get("method", train.method) == "lora":
        if "lora_r" in searched:
            params["lora_r"] = trial.suggest_categorical("lora_r", config.lora_ranks)
        if "lora_alpha" in searched:
            params["lora_alpha"] = trial.suggest_categorical("lora_alpha", config.lora_alphas)
        if "lora_dropout" in searched:
            params["lora_dropout"] = trial.suggest_float("lora_dropout", 0.0, config.lora_dropout_max)
    return params


def held_fixed(train: TrainConfig, search: Sequence[str]) -> dict[str, Any]:
    """The searched hyperparameters that the train section sets to other than their defaults. A
    deployment's form sends every field, so "set" has to mean "differs from the default"."""
    defaults = type(train)()
    return {name: getattr(train, name) for name in search if getattr(train, name) != getattr(defaults, name)}


def space_lines(config: SweepConfig, searched: list[str] | None = None) -> list[str]:
    """The searched space in words, one parameter each: `learning_rate 1e-05..0.001 (log)`."""
    ranges = {
        "learning_rate": f"{config.learning_rate_min:.1e}..{config.learning_rate_max:.1e} (log)",
        "epochs": f"{config.epochs_min}..{config.epochs_max}",
        "batch_size": f"one of {config.batch_sizes}",
        "weight_decay": f"0..{config.weight_decay_max:g}",
        "warmup_epochs": f"0..{config.warmup_epochs_max:g}",
        "lora_r": f"one of {config.lora_ranks} (LoRA trials)",
        "lora_alpha": f"one of {config.lora_alphas} (LoRA trials)",
        "lora_dropout": f"0..{config.lora_dropout_max:g} (LoRA trials)",
        "method": f"one of {config.methods}",
    }
    return [f"{name} {ranges[name]}" for name in (searched if searched is not None else config.search)]


def plot_importances(study: Any, path: Path) -> Path | None:
    """Optuna's own parameter-importance plot; None until there are IMPORTANCE_MIN_TRIALS completed
    trials over two or more parameters (with fewer, fANOVA gives every parameter the same share and
    Optuna warns)."""
    import optuna

    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(completed) < IMPORTANCE_MIN_TRIALS or len({name for t in completed for name in t.params}) < 2:
        return None
    pyplot()  # the Agg backend before Optuna draws
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the matplotlib plots are marked experimental
            axes = optuna.visualization.matplotlib.plot_param_importances(study)
    except (RuntimeError, ValueError):
        return None
    axes.set_title("Hyperparameter importance (fANOVA)")
    return save_figure(axes.figure, path)


def search_space(config: SweepConfig, train: TrainConfig) -> tuple[list[str], dict[str, Any]]:
    """What the sweep searches and what it keeps: a searched hyperparameter that the train section
    sets (to other than its default) is the user's choice and is not searched. Listing it in an
    explicit sweep.search as well is a contradiction, refused with what to change."""
    fixed = held_fixed(train, config.search)
    named = ", ".join(f"train.{name}={value}" for name, value in fixed.items())
    if fixed and config.search != DEFAULT_SEARCH:
        raise ConfigError(
            f"sweep.search={config.search} searches {', '.join(fixed)}, which the config also sets ({named}). "
            f"Remove {', '.join(fixed)} from sweep.search to keep your value, or unset it in the train section "
            "to search it."
        )
    searched: list[str] = [name for name in config.search if name not in fixed]
    if not searched:
        raise ConfigError(
            f"Nothing left to search: the config sets every parameter of sweep.search ({named}). "
            "Add parameters to sweep.search, or unset some of them in the train section."
        )
    return searched, fixed
