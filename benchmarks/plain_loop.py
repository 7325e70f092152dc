"""The reference arm of benchmarks/quality.py: fine-tune a model with a plain PyTorch loop (AdamW,
constant learning rate, fp32, no Trainer, no Prefect), scoring validation and test after every epoch.
On the first CUDA GPU when there is one, like tuneloop, so the wall times compare.

A fine-tune by tuneloop's defaults that loses to this loop on the same splits is a bug."""

from __future__ import annotations

import sys
import time
from typing import Any

import pandas as pd


def plain_finetune(
    model_path: str,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    test: pd.DataFrame,
    epochs: int = 4,
    learning_rate: float = 5e-5,
    batch_size: int = 32,
    max_length: int = 64,
    seed: int = 42,
    scored_epochs: set[int] | None = None,
) -> list[dict[str, Any]]:
    """Per epoch: train loss, validation and test macro/weighted F1 (after the `scored_epochs` only,
    when given: fixed recipes that never look, read off one training), seconds."""
    import torch
    from sklearn.metrics import f1_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    labels = sorted(train["label"].unique())
    index = {label: number for number, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=len(labels)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)

    def batches(frame: pd.DataFrame, order: Any) -> Any:
        for start in range(0, len(order), batch_size):
            rows = frame.iloc[order[start : start + batch_size]]
            encoded = tokenizer(
                rows["text"].tolist(), truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            target = torch.tensor([index.get(label, -1) for label in rows["label"]])
            yield encoded.to(device), target.to(device)

    def scores(frame: pd.DataFrame) -> dict[str, float]:
        model.eval()
        predicted = []
        with torch.no_grad():
            for encoded, _ in batches(frame, list(range(len(frame)))):
                predicted += model(**encoded).logits.argmax(-1).tolist()
        names = [labels[number] for number in predicted]
        return {
            average: float(f1_score(frame["label"], names, labels=labels, average=average, zero_division=0))
            for average in ("macro", "weighted")
        }

    history = []
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        started, losses = time.perf_counter(), []
        model.train()
        for encoded, target in batches(train, torch.randperm(len(train), generator=generator).tolist()):
            loss = model(**encoded, labels=target).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        seconds = time.perf_counter() - started
        scored = scored_epochs is None or epoch in scored_epochs
        history.append(
            {
                "epoch": epoch,
                "train_loss": sum(losses) / len(losses),
                "val": scores(validation) if scored and len(validation) else {},
                "test": scores(test) if scored else {},
                "seconds": round(seconds, 1),
            }
        )
        macro = f"test macro F1 {history[-1]['test']['macro']:.4f}" if scored else "not scored"
        print(
            f"  plain loop on {device}, epoch {epoch}/{epochs}: {macro} ({seconds:.1f} s)", file=sys.stderr, flush=True
        )
    return history
