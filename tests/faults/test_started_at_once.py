"""Three `tuneloop sweep` commands started at the same moment in a fresh home and a fresh Prefect
home: each creates (or finds) the Optuna storage, MLflow's SQLite store and its temporary Prefect
server's database without racing the others, and all three finish."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, own_homes, sample_command


@pytest.mark.drill
def test_three_sweeps_started_at_once_in_a_fresh_home_all_succeed(tiny_bert: Path, tmp_path: Path) -> None:
    env = own_homes(tmp_path)
    settings = [f"model.candidates=[{tiny_bert}]", "train.max_length=32", "train.batch_size=64", "train.epochs=1"]
    settings += [
        "sweep.trials_per_round=1",
        "sweep.max_rounds=1",
        "sweep.target_f1=0.0",
        "sweep.cross_validation=never",
    ]
    command = sample_command("sweep", *settings, "promotion.register_model=false")
    started = [
        subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=400)[0] for process in started]
    for process, output in zip(started, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
        assert "Traceback" not in output and "Application startup failed" not in output, output[-3000:]
    import optuna

    storage = f"sqlite:///{tmp_path / 'home' / 'optuna.db'}"
    assert len(optuna.get_all_study_names(storage)) == 3
