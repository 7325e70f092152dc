"""How to fine-tune: method (full or LoRA), optimisation, how long, sequence length, device, precision."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_LEARNING_RATE = {"full": 1e-4, "lora": 1e-3}


class TrainConfig(BaseModel):
    """How to fine-tune: method, optimisation, sequence length, device and precision."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["full", "lora"] = Field(
        "full",
        description="Update all weights, or train LoRA adapters "
        "(peft) and the classifier head. On small encoders and CPUs full "
        "fine-tuning gives more F1 per minute; LoRA pays off on large models.",
    )
    learning_rate: float | None = Field(
        None, gt=0, le=1, description="Peak learning rate; unset: 1e-4 for full, 1e-3 for LoRA."
    )
    epochs: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Most epochs to train; early stopping usually ends sooner. Unset: from the data size, "
        "enough for about 5000 optimizer steps, at least 3 and at most 30.",
    )
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant",
        description="The learning rate after warmup: constant (suits early stopping, which decides the end), "
        "or decaying to zero at the last planned epoch (linear, cosine).",
    )
    batch_size: int = Field(32, ge=1, le=4096, description="Examples per device per step.")
    gradient_accumulation_steps: int = Field(
        1,
        ge=1,
        le=1024,
        description="Steps whose gradients add up before one optimizer update (effective batch = batch_size x this).",
    )
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW weight decay.")
    warmup_epochs: float = Field(
        0.5,
        ge=0,
        le=100,
        description="Epochs of linear learning-rate warmup from zero (fractions allowed; at most half the "
        "planned steps). In epochs, not a share of all steps, so it does not grow with the epoch limit.",
    )
    max_length: int | None = Field(
        None,
        ge=8,
        le=8192,
        description="Tokens per text; longer texts are truncated. Unset: the 99th percentile of the training "
        "texts' lengths (at most 512 and the model's limit). Batches are padded only to their longest text.",
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed for weights of the new head, dropout and order.")
    early_stopping_patience: int = Field(
        3,
        ge=0,
        le=100,
        description="Stop after this many epochs without a better validation score; 0 turns early stopping off.",
    )
    refit: Literal["auto", "always", "never"] = Field(
        "auto",
        description="After the first fit chose how many epochs to train on validation, train again from the base "
        "model on train + validation for that many, so the final model learns from every labelled row "
        "(validation scores then come from the first fit). auto: when the validation split has fewer than "
        "300 rows, where the held-out rows are worth learning from and too few to choose weights by.",
    )
    keep_checkpoints: bool = Field(
        False,
        description="Keep the epoch checkpoints after a successful run (they let a crashed run resume; "
        "several times the model's size). Off: only the final model stays.",
    )
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, le=4096, description="LoRA scaling (alpha / r scales the update).")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA branch.")
    lora_target_modules: list[str] | None = Field(
        None, description="Module names to adapt; unset: peft's default for the architecture (query/value for BERT)."
    )
    device: Literal["auto", "cuda", "mps", "cpu"] = Field("auto", description="auto: CUDA, then MPS, then CPU.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, else fp16 on CUDA, fp32 elsewhere."
    )
