from pathlib import Path

import pytest

from tasks.errors import ConfigError
from tasks.finetune import TrainConfig, choose_device, epoch_history, lora_config, training_arguments


def test_training_arguments_follow_the_config(tmp_path: Path) -> None:
    config = TrainConfig(epochs=4, batch_size=8, gradient_accumulation_steps=2, warmup_ratio=0.2, seed=7)
    arguments = training_arguments(config, "f1_macro", tmp_path, "cpu", "fp32")
    assert arguments.num_train_epochs == 4 and arguments.learning_rate == 5e-5
    assert arguments.per_device_train_batch_size == 8 and arguments.gradient_accumulation_steps == 2
    assert arguments.warmup_steps == 0.2 and arguments.seed == 7
    assert arguments.eval_strategy == "epoch" and arguments.save_strategy == "epoch"
    assert arguments.metric_for_best_model == "f1_macro" and arguments.load_best_model_at_end
    assert arguments.use_cpu and not arguments.bf16 and not arguments.fp16
    assert arguments.report_to == [] or arguments.report_to == "none"


def test_lora_gets_its_own_default_learning_rate(tmp_path: Path) -> None:
    assert training_arguments(TrainConfig(method="lora"), "f1_macro", tmp_path, "cpu", "fp32").learning_rate == 1e-3
    explicit = TrainConfig(method="lora", learning_rate=3e-4)
    assert training_arguments(explicit, "f1_macro", tmp_path, "cpu", "fp32").learning_rate == 3e-4


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

    arguments = training_arguments(TrainConfig(), "f1_macro", tmp_path, "cuda", "fp16")
    assert arguments.fp16 and not arguments.bf16 and not arguments.use_cpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert choose_device(TrainConfig()) == ("cuda", "bf16")
    assert choose_device(TrainConfig(precision="fp32")) == ("cuda", "fp32")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert choose_device(TrainConfig()) == ("cuda", "fp16")


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
        {"eval_loss": 0.8, "eval_f1_macro": 0.5, "epoch": 1.0},
        {"loss": 0.5, "epoch": 2.0, "step": 8},
        {"eval_loss": 0.4, "eval_f1_macro": 0.75, "epoch": 2.0},
        {"train_runtime": 3.0, "epoch": 2.0},
    ]
    history = epoch_history(log, {2: 1.5})
    assert [(r.epoch, r.train_loss, r.val["f1_macro"], r.seconds) for r in history] == [
        (1, 0.9, 0.5, 0.0),
        (2, 0.5, 0.75, 1.5),
    ]
