from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from tasks.config.sweep import SweepConfig
from tasks.config.train import TrainConfig
from tasks.core.errors import ConfigError
from tasks.sweep.rounds import escalated
from tasks.sweep.search import open_study, search_space, space_lines
from tasks.sweep.trial import Judge, pruning_callback


def test_escalation_policy_per_round() -> None:
    config = SweepConfig(
        trials_per_round=4, epochs_max=3, escalation=["more_trials", "more_epochs", "widen", "full_finetune"]
    )
    assert escalated(config, 1) == config.model_copy(update={"trials_per_round": 4, "epochs_max": 3})
    second = escalated(config, 2, best_learning_rate=1e-4)
    assert second.trials_per_round == 6 and second.epochs_max == 4 and second.methods == ["full"]
    assert abs(second.learning_rate_min - 1e-4 / 3) < 1e-12 and abs(second.learning_rate_max - 3e-4) < 1e-12
    third = escalated(config, 3)
    assert abs(third.learning_rate_min - config.learning_rate_min / 9) < 1e-12
    assert escalated(SweepConfig(escalation=[]), 5) == SweepConfig(escalation=[])


def test_what_the_train_section_sets_is_held_fixed_not_searched() -> None:
    default = SweepConfig()
    assert search_space(default, TrainConfig()) == (["learning_rate", "weight_decay", "warmup_epochs"], {})
    searched, fixed = search_space(default, TrainConfig(learning_rate=3e-4, weight_decay=0.05))
    assert searched == ["warmup_epochs"] and fixed == {"learning_rate": 3e-4, "weight_decay": 0.05}
    assert search_space(default, TrainConfig(epochs=1))[0] == default.search, "epochs is not searched by default"
    explicit = SweepConfig(search=["learning_rate", "epochs"])
    with pytest.raises(ConfigError, match=r"searches epochs, which the config also sets \(train\.epochs=1\)"):
        search_space(explicit, TrainConfig(epochs=1))
    with pytest.raises(ConfigError, match="Nothing left to search"):
        search_space(default, TrainConfig(learning_rate=1e-4, weight_decay=0.1, warmup_epochs=1.0))


def test_the_search_space_in_words() -> None:
    config = SweepConfig(search=["learning_rate", "batch_size", "lora_r"], learning_rate_max=3e-4)
    assert space_lines(config) == [
        "learning_rate 1.0e-05..3.0e-04 (log)",
        "batch_size one of [16, 32]",
        "lora_r one of [4, 8, 16, 32] (LoRA trials)",
    ]


def test_gp_is_never_pruned_and_auto_prunes_the_others_by_the_median(tmp_path: Path) -> None:
    """GPSampler learns from completed trials only: a pruned trial teaches it nothing, and it asks
    for the same configuration again (measured: 16 pruned trials in a row at one point). So the
    default pruner (auto) is the median pruner for tpe and random and none for gp, and gp with a
    pruner is refused with what to set."""
    assert SweepConfig().pruning == "median" and SweepConfig(sampler="random").pruning == "median"
    assert SweepConfig(sampler="gp").pruning == "none" and SweepConfig(sampler="gp", pruner="none").pruning == "none"
    assert SweepConfig(pruner="successive_halving").pruning == "successive_halving"
    for pruner in ("median", "successive_halving"):
        with pytest.raises(ValidationError, match=r"sweep.pruner=auto or none with gp"):
            SweepConfig(sampler="gp", pruner=pruner)
    import optuna

    study = open_study(SweepConfig(sampler="gp"), "s", f"sqlite:///{tmp_path / 'optuna.db'}")
    assert isinstance(study.pruner, optuna.pruners.NopPruner)


def study_with_two_good_trials(tmp_path: Path, pruner: str = "median") -> str:
    """A study "s" holding two finished trials that scored 0.9 in each of 3 epochs; its storage URL."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = open_study(SweepConfig(pruner=pruner), "s", storage)
    for _ in range(2):
        good = study.ask()
        for epoch in (1, 2, 3):
            good.report(0.9, step=epoch)
            assert not good.should_prune()  # successive halving records its rungs here
        study.tell(good, 0.9)
    return storage


@pytest.mark.parametrize("pruner", ["median", "successive_halving"])
def test_no_trial_is_pruned_before_pruning_min_epochs(tmp_path: Path, pruner: str) -> None:
    """Two good finished trials, then a poor one: stopped at epoch 1 by default, not before epoch 2
    with sweep.pruning_min_epochs=2."""
    storage = study_with_two_good_trials(tmp_path, pruner)

    def prunes_at(config: SweepConfig) -> int | None:
        poor = open_study(config, "s", storage).ask()
        for epoch in (1, 2, 3):
            poor.report(0.1, step=epoch)
            if poor.should_prune():
                return epoch
        return None

    assert prunes_at(SweepConfig(pruner=pruner)) == 1
    assert prunes_at(SweepConfig(pruner=pruner, pruning_min_epochs=2)) == 2
    assert prunes_at(SweepConfig(pruner="none")) is None


def median_prunes(storage: str, score: float, validation_rows: int) -> bool:
    """Whether the median pruner stops a new trial of study "s" that scored `score` at epoch 1."""
    trial = open_study(SweepConfig(), "s", storage, validation_rows=validation_rows).ask()
    trial.report(score, step=1)
    return trial.should_prune()


def test_the_median_pruner_leaves_a_trial_within_the_validation_noise_of_the_median(tmp_path: Path) -> None:
    """Two finished trials at 0.9: on 600 validation rows a score is known to about 0.012, so 0.88
    is not clearly worse and goes on, while 0.85 is stopped; with no margin (0 rows given) 0.88 is."""
    storage = study_with_two_good_trials(tmp_path)
    assert not median_prunes(storage, 0.88, validation_rows=600)
    assert median_prunes(storage, 0.85, validation_rows=600)
    assert median_prunes(storage, 0.88, validation_rows=0)


def test_the_median_pruner_counts_pruned_trials_so_completed_good_ones_do_not_set_the_bar(tmp_path: Path) -> None:
    """Optuna's median pruner compares with completed trials only: once they are the good ones,
    nearly every new trial is below their median and the search stalls. Ours counts the pruned
    trials' scores at the same epoch too: two completed at 0.9 and three pruned at 0.3 put the
    median at 0.3, so a trial at 0.5 goes on."""
    import optuna

    storage = study_with_two_good_trials(tmp_path)
    study = open_study(SweepConfig(), "s", storage)
    for _ in range(3):
        poor = study.ask()
        poor.report(0.3, step=1)
        study.tell(poor, state=optuna.trial.TrialState.PRUNED)
    assert not median_prunes(storage, 0.5, validation_rows=600)
    assert median_prunes(storage, 0.2, validation_rows=600)


def evaluate_epoch_1(storage: str, epochs: int, step: int = 4, warmup: int = 0, min_steps: int = 0) -> None:
    """The pruning callback of a new trial of study "s" at the end of epoch 1 (optimizer step
    `step`, after `warmup` warmup steps), scoring 0.1."""
    from transformers import TrainerState

    callback = pruning_callback(Judge(open_study(SweepConfig(), "s", storage).ask(), "f1_macro", min_steps))
    args = SimpleNamespace(num_train_epochs=epochs, warmup_steps=warmup)
    callback.on_evaluate(args, TrainerState(epoch=1.0, global_step=step), None, metrics={"eval_f1_macro": 0.1})


def test_a_trial_at_its_last_epoch_is_never_pruned(tmp_path: Path) -> None:
    """The Trainer callback prunes a poor trial before its last epoch, but lets a poor one-epoch
    trial finish: stopping it would save nothing."""
    import optuna

    storage = study_with_two_good_trials(tmp_path)
    with pytest.raises(optuna.TrialPruned, match="after epoch 1"):
        evaluate_epoch_1(storage, epochs=3)
    evaluate_epoch_1(storage, epochs=1)  # no exception: the trial finishes


def test_no_trial_is_pruned_before_pruning_min_steps_after_its_warmup(tmp_path: Path) -> None:
    """With sweep.pruning_min_steps=20, a poor trial whose epoch 1 ends at optimizer step 22 is
    judged only when it made 20 steps after its warmup: not with 4 warmup steps, but without."""
    import optuna

    storage = study_with_two_good_trials(tmp_path)
    evaluate_epoch_1(storage, epochs=3, step=22, warmup=4, min_steps=20)  # 18 steps after warmup: too early
    with pytest.raises(optuna.TrialPruned, match="after epoch 1"):
        evaluate_epoch_1(storage, epochs=3, step=22, warmup=0, min_steps=20)


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_a_modelling_sampler_starts_space_filling_and_then_closes_in_on_the_best_learning_rate(
    tmp_path: Path, sampler: str
) -> None:
    """The start-up trials are points of one design, not random draws: the first 4 take one
    learning rate from each quarter of the log range (and one weight decay from each quarter of
    its range), whichever process asks them; after them the sampler proposes nearer the best
    learning rate of a one-peak score than random search does."""
    import math
    import statistics

    from tasks.sweep.record import ask
    from tasks.sweep.search import suggest

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"

    def trials(kind: str, seed: int = 7, search: tuple[str, ...] = ("learning_rate",)) -> list[dict]:
        """12 trials' parameters, each asked by a study opened anew (as each round or trial process
        does), told a score that peaks at a learning rate of 1e-4."""
        config = SweepConfig(sampler=kind, search=list(search), startup_trials=4, seed=seed)
        found = []
        for slot in range(12):
            study = open_study(config, f"{kind}-{seed}-{len(search)}", storage, slot)
            trial = ask(study)
            found.append(suggest(trial, config, TrainConfig()))
            study.tell(trial, -abs(math.log10(found[-1]["learning_rate"]) + 4))
        return found

    def quarters(values: list[float], low: float, high: float) -> list[int]:
        return sorted(int(4 * (value - low) / (high - low)) for value in values)

    modelled, randomly = trials(sampler), trials("random")
    rates = [math.log10(params["learning_rate"]) for params in modelled]
    assert quarters(rates[:4], -5, -3) == [0, 1, 2, 3], rates[:4]
    assert quarters([math.log10(params["learning_rate"]) for params in randomly[:4]], -5, -3) != [0, 1, 2, 3]
    two = trials(sampler, seed=8, search=("learning_rate", "weight_decay"))
    assert quarters([params["weight_decay"] for params in two[:4]], 0, 0.1) == [0, 1, 2, 3], two[:4]
    assert quarters([math.log10(params["learning_rate"]) for params in two[:4]], -5, -3) == [0, 1, 2, 3], two[:4]
    assert [params["learning_rate"] for params in two[:4]] != [params["learning_rate"] for params in modelled[:4]]
    distance = [abs(rate + 4) for rate in rates]
    distance_randomly = [abs(math.log10(params["learning_rate"]) + 4) for params in randomly]
    assert statistics.median(distance[4:]) < 0.8 * statistics.median(distance_randomly[4:]), (rates, randomly)


def test_the_replay_benchmark_runs_the_sweeps_own_sampler_and_pruner_on_recorded_curves() -> None:
    """benchmarks/sweep_replay.py replays recorded learning curves through study_sampler and
    study_pruner; on these curves the default search spends less than random search over 30 seeds,
    and the replay of the old random start-up still reproduces what the real benchmark measured for
    seed 0 (45 trial-epochs: its 4th trial, 3 complete and one pruned)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    script = [sys.executable, str(root / "benchmarks" / "sweep_replay.py"), "--seeds", "30"]
    done = subprocess.run(script, capture_output=True, text=True, check=True, cwd=root)
    ratio = float(done.stdout.split("searching / random: ")[1].split()[0])
    assert ratio < 0.8, done.stdout
    old = subprocess.run(
        [*script[:2], "--seeds", "1", "--random-start", "--startup-trials", "4"],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    )
    assert "| tpe + auto pruning | 45.0 |" in old.stdout, old.stdout
