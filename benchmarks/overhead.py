"""Orchestration overhead: the same fine-tuning run by a plain transformers Trainer script versus
through `tuneloop run` (Prefect flow, Great Expectations gate, leak-free split, evaluation, MLflow).

Target (issue 3): tuneloop's wall time at most 1.10 x the plain script's on a 2-epoch run. Both
are timed as whole processes (imports included), same model, data, epochs, batch size and length.
Uses the SMS Spam Collection from ../shared/data when present, else the bundled sample.
Run: `python benchmarks/overhead.py [--epochs 2]`.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMS = ROOT.parent / "shared" / "data" / "sms_spam" / "SMSSpamCollection.tsv"


def plain(data: str, text_column: str, label_column: str, epochs: int, batch_size: int, max_length: int) -> None:
    """What a hand-written script does: read, split, tokenize, Trainer.train, score the test set."""
    import datasets
    import numpy as np
    import pandas as pd
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from tasks.model.resolve import resolve_model

    frame = pd.read_csv(
        data,
        sep="\t" if data.endswith(".tsv") else ",",
        quoting=csv.QUOTE_NONE if data.endswith(".tsv") else csv.QUOTE_MINIMAL,
        dtype=str,
    ).dropna(subset=[label_column])
    frame["text"] = frame[text_column].fillna("")
    labels = sorted(frame[label_column].unique())
    frame["label"] = frame[label_column].map({label: index for index, label in enumerate(labels)})
    train, rest = train_test_split(frame, test_size=0.2, stratify=frame["label"], random_state=42)
    validation, test = train_test_split(rest, test_size=0.5, stratify=rest["label"], random_state=42)
    path = resolve_model("sentence-transformers/all-MiniLM-L6-v2").path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))

    def encode(part: pd.DataFrame) -> datasets.Dataset:
        dataset = datasets.Dataset.from_pandas(part[["text", "label"]].reset_index(drop=True))
        return dataset.map(lambda b: tokenizer(b["text"], truncation=True, max_length=max_length), batched=True)

    def f1(prediction) -> dict:
        return {"f1_macro": f1_score(prediction.label_ids, prediction.predictions.argmax(-1), average="macro")}

    with tempfile.TemporaryDirectory() as output:
        arguments = TrainingArguments(
            output_dir=output,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            per_device_eval_batch_size=64,
            learning_rate=5e-5,
            weight_decay=0.01,
            warmup_steps=0.1,
            eval_strategy="epoch",
            save_strategy="epoch",
            load_best_model_at_end=True,
            metric_for_best_model="f1_macro",
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
            save_total_limit=2,
            seed=42,
        )
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=encode(train),
            eval_dataset=encode(validation),
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=f1,
        )
        trainer.train()
        predictions = trainer.predict(encode(test))
    score = f1_score(predictions.label_ids, np.argmax(predictions.predictions, -1), average="macro")
    print(f"plain test f1_macro {score:.4f}")


def timed(command: list[str], env_home: Path) -> float:
    """Wall seconds of one command as its own process."""
    start = time.perf_counter()
    subprocess.run(
        command, check=True, cwd=ROOT, env={**os.environ, "TUNELOOP_HOME": str(env_home)}, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    if SMS.is_file():
        data, text_column, label_column = str(SMS), "SMS", "Label"
    else:
        data, text_column, label_column = str(ROOT / "data/sample/support_tickets.csv"), "body", "category"
    data = args.data or data
    if args.plain:
        plain(data, text_column, label_column, args.epochs, args.batch_size, args.max_length)
        return 0
    tuneloop = [
        str(Path(sys.executable).with_name("tuneloop")),
        "run",
        "--data",
        data,
        "--text-column",
        text_column,
        "--label-column",
        label_column,
        "--set",
        f"train.epochs={args.epochs}",
        "--set",
        "train.early_stopping_patience=0",
        "--set",
        f"train.batch_size={args.batch_size}",
        "--set",
        f"train.max_length={args.max_length}",
        "--json",
    ]
    script = [
        sys.executable,
        __file__,
        "--plain",
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--max-length",
        str(args.max_length),
        "--data",
        data,
    ]
    with tempfile.TemporaryDirectory() as home:
        plain_seconds = timed(script, Path(home) / "plain")
        tuneloop_seconds = timed(tuneloop, Path(home) / "tuneloop")
    print(f"data: {data} ({args.epochs} epochs, batch {args.batch_size}, max length {args.max_length})")
    print(f"{'runner':<28} {'wall s':>8}")
    print(f"{'plain Trainer script':<28} {plain_seconds:>8.1f}")
    print(f"{'tuneloop run':<28} {tuneloop_seconds:>8.1f}")
    print(f"{'ratio (target <= 1.10)':<28} {tuneloop_seconds / plain_seconds:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
