"""The real configs shrunk for tests (STYLE 7: shrink the defaults, never a parallel dict); the
flow tests get them as the `tiny_config` and `sweep_config` fixtures, bound to the tiny BERT."""

from __future__ import annotations

from pathlib import Path

from tasks.config.load import load_config
from tasks.config.pipeline import PipelineConfig, SweepPipelineConfig
from tests.helpers import ROOT


def on_the_sample(model: Path, max_length: int) -> list[str]:
    """Overrides every shrunk config starts from: the sample, the model, short texts, big batches."""
    return [
        f"data.path={ROOT / 'data/sample/support_tickets.csv'}",
        f"model.candidates=[{model}]",
        "train.batch_size=64",
        f"train.max_length={max_length}",
    ]


def tiny_config(model: Path, *overrides: str) -> PipelineConfig:
    """The sample's config shrunk for a tiny model: 2 epochs, short texts, its own experiment. The
    baseline does not compete (it beats an untrained tiny model, and the tests follow the fine-tune's
    path); tests of the competition set promotion.baseline_competes=true."""
    sample = ROOT / "data/sample/config.yaml"
    shrunk = [
        *on_the_sample(model, 64),
        "train.epochs=2",
        "tracking.experiment=tiny",
        "promotion.baseline_competes=false",
    ]
    return load_config(sample, [*shrunk, *overrides])


def sweep_config(model: Path, *overrides: str) -> SweepPipelineConfig:
    """A small sweep of a tiny model on the sample: 3 trials a round, 2 rounds, no pruning or escalation;
    the baseline does not compete (as in tiny_config)."""
    sweep = [
        "promotion.baseline_competes=false",
        "train.early_stopping_patience=0",
        "tracking.experiment=sweeps",
        "sweep.trials_per_round=3",
        "sweep.max_rounds=2",
        "sweep.search=[learning_rate, epochs, weight_decay, warmup_epochs]",
        "sweep.epochs_min=1",
        "sweep.epochs_max=2",
        "sweep.escalation=[]",
        "sweep.pruner=none",
        "sweep.cross_validation=never",
    ]
    sample = ROOT / "data/sample/config.yaml"
    return load_config(sample, [*on_the_sample(model, 32), *sweep, *overrides], SweepPipelineConfig)
