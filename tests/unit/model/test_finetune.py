from pathlib import Path

import pytest

from tasks.config.train import TrainConfig
from tasks.core.errors import ConfigError
from tasks.model.plan import (
    EpochRecord,
    TrainingPlan,
    best_epoch,
    choose_device,
    choose_max_length,
    early_stopping,
    epoch_scores,
    epochs_without_progress,
    lora_config,
    selection_score,
    smoothed,
    training_arguments,
    training_plan,
)
from tasks.model.trainer import epoch_history


def plan_for(config: TrainConfig, rows: int = 1000, max_length: int = 64) -> TrainingPlan:
    return training_plan(rows, config, max_length)


def test_training_arguments_follow_the_config_and_plan(tmp_path: Path) -> None:
    config = TrainConfig(epochs=4, batch_size=8, gradient_accumulation_steps=2, warmup_epochs=0.5, seed=7)
    plan = plan_for(config, rows=160)
    assert (plan.steps_per_epoch, plan.epochs, plan.warmup_steps) == (10, 4, 5)
    arguments = training_arguments(plan, config, tmp_path, "cpu", "fp32")
    assert arguments.num_train_epochs == 4 and arguments.learning_rate == 1e-4
    assert arguments.per_device_train_batch_size == 8 and arguments.gradient_accumulation_steps == 2
    assert arguments.warmup_steps == 5 and arguments.seed == 7
    assert arguments.lr_scheduler_type == "constant_with_warmup"
    assert arguments.eval_strategy == "epoch" and arguments.save_strategy == "epoch"
    assert arguments.metric_for_best_model == "selection" and arguments.load_best_model_at_end
    assert arguments.use_cpu and not arguments.bf16 and not arguments.fp16
    assert arguments.report_to == [] or arguments.report_to == "none"
    decaying = TrainConfig(epochs=4, lr_scheduler="linear")
    assert training_arguments(plan_for(decaying), decaying, tmp_path, "cpu", "fp32").lr_scheduler_type == "linear"


SEVERAL_GPUS = """
import sys, tempfile
import torch
torch.cuda.is_available = lambda: True  # transformers sees a host with 2 GPUs (no GPU needed)
torch.cuda.device_count = lambda: 2
torch.cuda.set_device = lambda device: None
from transformers import TrainingArguments
from tasks.config.train import TrainConfig
from tasks.model.plan import training_arguments, training_plan
config = TrainConfig(batch_size=8)
plain = TrainingArguments(output_dir=tempfile.mkdtemp(), report_to="none")
ours = training_arguments(training_plan(160, config, 64), config, tempfile.mkdtemp(), "cuda", "fp32")
print(plain.n_gpu, plain.train_batch_size // plain.per_device_train_batch_size, ours.device, ours.n_gpu,
      ours.train_batch_size)
"""


def test_a_run_that_sees_several_gpus_trains_on_one_at_the_planned_batch_size() -> None:
    """With 2 GPUs visible the Trainer would wrap the model in DataParallel (n_gpu > 1) and train on
    batches twice the configured size; a run trains on cuda:0 with the batch size it planned.
    In a process of its own: transformers' device setup is process-wide."""
    import subprocess
    import sys

    answer = subprocess.run([sys.executable, "-c", SEVERAL_GPUS], capture_output=True, text=True, timeout=120)
    assert answer.returncode == 0, answer.stderr[-2000:]
    assert answer.stdout.split() == ["2", "2", "cuda:0", "1", "8"], answer.stdout


def test_lora_gets_its_own_default_learning_rate() -> None:
    assert plan_for(TrainConfig(method="lora")).learning_rate == 1e-3
    assert plan_for(TrainConfig(method="full")).learning_rate == 1e-4
    assert plan_for(TrainConfig(method="lora", learning_rate=3e-4)).learning_rate == 3e-4


@pytest.mark.parametrize(
    ("rows", "epochs"),
    [
        (300, 30),  # 10 steps an epoch: the limit of 30, early stopping decides
        (8_000, 20),  # 250 steps an epoch: 5000 steps
        (15_000, 11),  # CLINC150's training split: 469 steps an epoch
        (300_000, 3),  # 9375 steps an epoch: never fewer than 3
    ],
)
def test_unset_epochs_give_small_data_enough_steps_and_large_data_few_epochs(rows: int, epochs: int) -> None:
    plan = plan_for(TrainConfig(), rows=rows)
    assert plan.epochs == epochs and plan.patience == 3
    assert plan_for(TrainConfig(epochs=2), rows=rows).epochs == 2, "a set value is kept"


def test_warmup_is_counted_in_epochs_and_never_more_than_half_the_steps() -> None:
    assert plan_for(TrainConfig(), rows=320).warmup_steps == 5  # half of a 10-step epoch
    assert plan_for(TrainConfig(), rows=300_000).warmup_steps == 4688  # half of a 9375-step epoch
    assert plan_for(TrainConfig(epochs=1, warmup_epochs=3), rows=320).warmup_steps == 5
    assert plan_for(TrainConfig(warmup_epochs=0), rows=320).warmup_steps == 0


def test_max_length_is_the_99th_percentile_rounded_up_within_the_limit() -> None:
    lengths = [10] * 95 + [20] * 4 + [300]  # one pasted log does not set the length for everyone
    assert choose_max_length(lengths, limit=512) == 24
    assert choose_max_length([7, 9], limit=512) == 16, "at least 16"
    assert choose_max_length([900] * 10, limit=512) == 512
    assert choose_max_length([40] * 10, limit=32) == 32, "never past the model's limit"


def test_ties_in_the_score_go_to_the_lower_validation_loss() -> None:
    assert selection_score(0.9, 0.2) > selection_score(0.9, 0.5) > selection_score(0.899999, 0.0)
    assert selection_score(0.91, 5.0) > selection_score(0.9, 0.0), "the loss never outweighs a better score"
    history = [
        EpochRecord(epoch=1, train_loss=0.9, val={"f1_macro": 1.0}, seconds=1, val_loss=0.9),
        EpochRecord(epoch=2, train_loss=0.5, val={"f1_macro": 1.0}, seconds=1, val_loss=0.3),
        EpochRecord(epoch=3, train_loss=0.2, val={"f1_macro": 1.0}, seconds=1, val_loss=0.4),
    ]
    assert best_epoch(history, "f1_macro") == 2
    history[2].val["f1_macro"] = 0.99
    history[0].val["f1_macro"] = 1.0
    better = [record.model_copy(update={"selection": None}) for record in history]
    assert best_epoch(better, "f1_macro") == 2


def records(*scores: float, losses: list[float] | None = None) -> list[EpochRecord]:
    """Epochs with these validation scores (and losses), their selection left to best_epoch."""
    losses = losses or [1.0] * len(scores)
    return [
        EpochRecord(epoch=number, train_loss=None, val={"f1_macro": score}, seconds=0, val_loss=loss)
        for number, (score, loss) in enumerate(zip(scores, losses, strict=True), start=1)
    ]


def test_one_lucky_epoch_on_a_small_validation_split_does_not_choose_the_training_length() -> None:
    """Validation F1 on a few dozen rows jumps by two or three texts an epoch: an early outlier
    (epoch 3 here, 0.97 between 0.8s) is not chosen over the later plateau it stands out of; the
    rank is the mean of the last 3 epochs, ending at the one chosen."""
    noisy = records(0.50, 0.80, 0.97, 0.82, 0.86, 0.90, 0.91, 0.90, 0.86)
    assert max(noisy, key=lambda record: record.val["f1_macro"]).epoch == 3, "the raw best is the outlier"
    assert best_epoch(noisy, "f1_macro") == 8  # 0.90, 0.91, 0.90: the best three in a row
    assert smoothed([0.8, 0.9]) == pytest.approx(0.85) and smoothed([0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.3)
    steady = records(0.5, 0.7, 0.8, 0.85, 0.9, 0.92)
    assert best_epoch(steady, "f1_macro") == 6, "a rising score keeps the last epoch"


def test_the_trainers_selection_score_is_smoothed_over_the_epochs_before_and_after_a_resume(tmp_path: Path) -> None:
    """epoch_scores (the Trainer's scoring) ranks an epoch by its own and the earlier epochs' scores,
    as best_epoch does on the finished history."""
    import numpy as np

    labels = np.array([0, 1, 1, 0])
    half = epoch_scores(np.array([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 2.0]]), labels, 2, "f1_macro", [1.0, 1.0])
    assert half["f1_macro"] == 0.5
    assert half["selection"] == pytest.approx(selection_score((1.0 + 1.0 + 0.5) / 3, half["cross_entropy"]))
    alone = epoch_scores(np.array([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 2.0]]), labels, 2, "f1_macro")
    assert alone["selection"] == pytest.approx(selection_score(0.5, alone["cross_entropy"]))


def epochs_until_stopped(scores: list[tuple[float, float]], patience: int) -> int:
    """Epochs trained before early stopping ends training, driving the callback as the Trainer
    does: each evaluation is logged (selection score and loss), then on_evaluate is called."""
    from transformers import TrainerControl, TrainerState

    callback, state, control = early_stopping(patience), TrainerState(), TrainerControl()
    for epoch, (score, loss) in enumerate(scores, start=1):
        selection = selection_score(smoothed([score for score, _ in scores[:epoch]]), loss)
        state.log_history.append({"eval_selection": selection, "eval_loss": loss, "epoch": float(epoch)})
        callback.on_evaluate(None, state, control)
        if control.should_training_stop:
            return epoch
    return len(scores)


def test_early_stopping_waits_while_the_score_or_the_loss_improves() -> None:
    """On a few dozen validation rows the score can sit on one value for epochs while the model
    still learns: a falling validation loss is progress too; once neither improves, it stops."""
    learning = [(0.9, 1.0), (0.98, 0.5)] + [(0.98, 0.4 - 0.01 * n) for n in range(28)]
    assert epochs_until_stopped(learning, 3) == 30, "a flat score over a falling loss is still learning"
    settled = [(0.9, 1.0), (0.98, 0.5)] + [(0.98, 0.5)] * 28
    # the mean of the last 3 scores reaches the plateau at epoch 4; three epochs later it stops
    assert epochs_until_stopped(settled, 3) == 7
    overfitting = [(0.5, 1.0), (0.7, 0.8), (0.8, 0.6)] + [(0.8, 0.6 + 0.05 * n) for n in range(1, 28)]
    assert epochs_until_stopped(overfitting, 3) == 8, "a rising loss under a flat score stops"
    assert epochs_until_stopped([(0.5 + 0.01 * n, 1.0) for n in range(30)], 3) == 30
    assert epochs_until_stopped([(0.9, 1.0), (0.9, 0.9995)] + [(0.9, 0.999)] * 10, 3) == 4, (
        "a loss falling by less than 0.1% is no progress"
    )


def test_a_resumed_run_counts_the_epochs_before_its_crash() -> None:
    """The callback keeps no count of its own: it reads the Trainer's log, which a resume restores."""
    from transformers import TrainerControl, TrainerState

    state, control = TrainerState(), TrainerControl()
    for epoch, loss in enumerate([0.5, 0.6, 0.7, 0.8], start=1):
        state.log_history.append({"eval_selection": 0.9, "eval_loss": loss, "epoch": float(epoch)})
    early_stopping(3).on_evaluate(None, state, control)  # a new callback, as after a resume
    assert control.should_training_stop
    assert epochs_without_progress([(0.9, 0.5), (0.9, 0.6), (0.91, 0.7)]) == 0


def test_epoch_scores_rank_a_tied_epoch_by_its_cross_entropy() -> None:
    import numpy as np

    labels = np.array([0, 1, 1])
    confident = epoch_scores(np.array([[4.0, 0.0], [0.0, 4.0], [0.0, 4.0]]), labels, 2, "f1_macro")
    unsure = epoch_scores(np.array([[0.2, 0.0], [0.0, 0.2], [0.0, 0.2]]), labels, 2, "f1_macro")
    assert confident["f1_macro"] == unsure["f1_macro"] == 1.0
    assert confident["cross_entropy"] == pytest.approx(np.log(1 + np.exp(-4.0)))
    assert confident["selection"] > unsure["selection"]


def test_lora_config_follows_the_config() -> None:
    lora = lora_config(
        TrainConfig(method="lora", lora_r=4, lora_alpha=8, lora_dropout=0.2, lora_target_modules=["query"])
    )
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (4, 8, 0.2)
    assert set(lora.target_modules) == {"query"} and lora.task_type == "SEQ_CLS"


def test_cpu_machine_trains_in_fp32_and_refuses_gpu_settings() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert choose_device(TrainConfig()) == ("cpu", "fp32")
    with pytest.raises(ConfigError, match=r"train\.device=cuda but no CUDA device"):
        choose_device(TrainConfig(device="cuda"))
    with pytest.raises(ConfigError, match=r"train\.precision=bf16 needs a CUDA GPU"):
        choose_device(TrainConfig(precision="bf16"))


def test_on_a_gpu_the_choice_is_bf16_else_fp16(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The decision logic only (the GPU run itself is test_gpu_trains_in_bf16_or_fp16, marker gpu)."""
    import torch

    arguments = training_arguments(plan_for(TrainConfig()), TrainConfig(), tmp_path, "cuda", "fp16")
    assert arguments.fp16 and not arguments.bf16 and not arguments.use_cpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert choose_device(TrainConfig()) == ("cuda", "bf16")
    assert choose_device(TrainConfig(precision="fp32")) == ("cuda", "fp32")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert choose_device(TrainConfig()) == ("cuda", "fp16")


def test_the_device_is_looked_for_through_nvml_so_the_cuda_driver_stays_unstarted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sweep checks its trials' device before it chooses its GPU: torch's availability check then
    counts GPUs through NVML (PYTORCH_NVML_BASED_CUDA_CHECK=1), which does not start the driver, and
    the setting is put back after (the driver-level check on a GPU: test_gpus.py, marker gpu)."""
    import os

    import torch

    from tasks.model.plan import NVML_CHECK, training_device

    asked: list[str | None] = []

    def is_available() -> bool:
        asked.append(os.environ.get(NVML_CHECK))
        return True

    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    monkeypatch.delenv(NVML_CHECK, raising=False)
    assert training_device(TrainConfig()) == "cuda" and asked == ["1"]
    assert NVML_CHECK not in os.environ
    monkeypatch.setenv(NVML_CHECK, "0")
    assert training_device(TrainConfig(precision="bf16")) == "cuda" and os.environ[NVML_CHECK] == "0"
    with pytest.raises(ConfigError, match=r"train\.precision=fp16 needs a CUDA GPU; on cpu"):
        training_device(TrainConfig(device="cpu", precision="fp16"))
    monkeypatch.delenv(NVML_CHECK)
    assert choose_device(TrainConfig(precision="fp32")) == ("cuda", "fp32")  # training asks the driver
    assert asked[-1] is None and NVML_CHECK not in os.environ


@pytest.mark.gpu
def test_gpu_trains_in_bf16_or_fp16() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here")
    device, precision = choose_device(TrainConfig())
    assert device == "cuda" and precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")


def test_epoch_history_reads_the_trainer_log() -> None:
    log = [
        {"loss": 0.9, "epoch": 1.0, "step": 4},
        {"eval_loss": 0.8, "eval_f1_macro": 0.5, "eval_selection": 0.5, "epoch": 1.0, "step": 4},
        {"loss": 0.5, "epoch": 2.0, "step": 8},
        {"eval_loss": 0.4, "eval_f1_macro": 0.75, "eval_selection": 0.75, "epoch": 2.0, "step": 8},
        {"train_runtime": 3.0, "epoch": 2.0},
    ]
    history = epoch_history(log, {2: 1.5})
    assert [(r.epoch, r.train_loss, r.val["f1_macro"], r.seconds, r.val_loss) for r in history] == [
        (1, 0.9, 0.5, 0.0, 0.8),
        (2, 0.5, 0.75, 1.5, 0.4),
    ]
    assert best_epoch(history, "f1_macro") == 2


def test_the_load_report_is_one_line_naming_the_new_head() -> None:
    from tasks.model.resolve import ModelRef
    from tasks.model.trainer import loading_line

    model = ModelRef(base_model="org/encoder", path="/models/encoder", source="local")
    line = loading_line(model, {"missing_keys": ["classifier.weight", "classifier.bias"], "unexpected_keys": set()})
    assert line == "Loaded org/encoder: new weights classifier.bias, classifier.weight (trained from scratch)"
    assert "\n" not in loading_line(model, {"missing_keys": [], "unexpected_keys": {"pooler.dense.bias"}})
