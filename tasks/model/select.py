"""Choose the base model: screen each candidate (license, task fit, weights and tokenizer, size
against the memory at hand), probe the survivors cheaply on the training split, keep the best.
Every decision is recorded with its reason."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, Field

from tasks.config.eval import EvalConfig
from tasks.config.model import ModelConfig
from tasks.config.train import TrainConfig
from tasks.core.errors import ModelNotFoundError, ModelSelectionError
from tasks.core.quiet import quiet_libraries
from tasks.data.split import SplitReport
from tasks.model.resolve import ModelRef, resolve_model

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json", "spiece.model")


# Sequence length for the memory estimate when train.max_length is left to be chosen from the data
# (which happens at fine-tuning, with the chosen model's tokenizer); short texts stay well below it.
ESTIMATED_LENGTH = 128


class CandidateReport(BaseModel):
    """What screening and probing found for one candidate."""

    candidate: str
    accepted: bool
    reasons: list[str] = Field(default_factory=list)
    license: str | None = None
    architecture: str | None = None
    parameters: int | None = None
    memory_gb: dict[str, float] = Field(default_factory=dict)
    probe_score: float | None = None
    probe_seconds: float | None = None
    path: str | None = None
    source: str | None = None


class SelectionReport(BaseModel):
    """Every candidate's record and the one chosen."""

    chosen: ModelRef
    metric: str
    probe: str
    candidates: list[CandidateReport]

    def runners_up(self) -> list[ModelRef]:
        """The accepted candidates in rank order, the chosen one first (sweeps escalate along it)."""
        return [
            ModelRef(base_model=report.candidate, path=str(report.path), source=str(report.source))
            for report in ranked(self.candidates)
        ] or [self.chosen]


def read_license(folder: Path) -> str | None:
    """The license in the model card's metadata (README.md front matter), else in config.json."""
    import yaml
    from huggingface_hub import metadata_load

    card = folder / "README.md"
    try:
        meta = metadata_load(card) if card.is_file() else None
    except (yaml.YAMLError, UnicodeDecodeError):  # front matter that is not YAML: no license to read
        meta = None
    found = meta.get("license") if isinstance(meta, dict) else None
    if found:
        return str(found[0] if isinstance(found, list) else found).lower()
    config = folder / "config.json"
    if config.is_file():
        found = json.loads(config.read_text(encoding="utf-8")).get("license")
        return str(found).lower() if found else None
    return None


def count_parameters(folder: Path) -> int:
    """Parameters in the safetensors files, from their headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="np") as weights:
            total += sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())  # noqa: SIM118
    return total


def estimate_memory_gb(parameters: int, config: Any, batch_size: int, max_length: int, lora_r: int) -> dict[str, float]:
    """Rough training memory for full fine-tuning and LoRA: fp32 weights (4 B per parameter), gradients
    and AdamW state for the trainable ones (12 B each), activations as in Korthikanti et al. 2022
    (per layer s*b*(34h + 5a*s) bytes at 16 bit, doubled for fp32), plus 20% for the rest."""
    layers = getattr(config, "num_hidden_layers", 12)
    hidden = getattr(config, "hidden_size", 768)
    heads = getattr(config, "num_attention_heads", 12)
    activations = layers * batch_size * max_length * (34 * hidden + 5 * heads * max_length) * 2
    lora_trainable = layers * 2 * lora_r * 2 * hidden + hidden * hidden  # query and value adapters, head
    estimate = {
        "full": 4 * parameters + 12 * parameters + activations,
        "lora": 4 * parameters + 12 * lora_trainable + activations,
    }
    return {method: round(1.2 * value / 2**30, 3) for method, value in estimate.items()}


def memory_budget_gb(config: ModelConfig) -> float:
    """The GPU's memory when there is one, else the configured budget."""
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.get_device_properties(0).total_memory / 2**30, 2)
    return config.memory_budget_gb


def screen_candidate(
    name: str, config: ModelConfig, method: str, batch_size: int, max_length: int, lora_r: int, budget_gb: float
) -> CandidateReport:
    """Check one candidate; every failed check adds a reason and rejects it."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    try:
        ref = resolve_model(name, config.revision)
    except ModelNotFoundError as error:
        return CandidateReport(candidate=name, accepted=False, reasons=[str(error)])
    folder = Path(ref.path)
    report = CandidateReport(
        candidate=name, accepted=False, path=ref.path, source=ref.source, license=read_license(folder)
    )
    if report.license is None:
        if not config.allow_unknown_license:
            report.reasons.append(
                "license unknown (no license in the model card); set model.allow_unknown_license=true to accept it"
            )
    elif report.license not in config.allowed_licenses:
        report.reasons.append(f"license {report.license} is not in model.allowed_licenses")
    model_config = AutoConfig.from_pretrained(ref.path, trust_remote_code=config.trust_remote_code)
    report.architecture = model_config.model_type
    remote_head = "AutoModelForSequenceClassification" in (getattr(model_config, "auto_map", None) or {})
    if model_config.model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES and not (
        remote_head and config.trust_remote_code
    ):
        report.reasons.append(
            f"architecture {model_config.model_type} has no sequence-classification head in the installed transformers"
        )
    if not any((folder / file).is_file() for file in TOKENIZER_FILES):
        report.reasons.append("no tokenizer files")
    report.parameters = count_parameters(folder)
    report.memory_gb = estimate_memory_gb(report.parameters, model_config, batch_size, max_length, lora_r)
    if report.memory_gb[method] > budget_gb:
        report.reasons.append(
            f"needs about {report.memory_gb[method]:.2f} GB to train with {method} at batch "
            f"{batch_size} x {max_length} tokens; {budget_gb:.2f} GB available"
        )
    report.accepted = not report.reasons
    return report


def embed(folder: str, texts: list[str], max_length: int, batch_size: int = 64) -> Any:
    """Mean-pooled last hidden states of a frozen encoder."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    quiet_libraries()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoder = AutoModel.from_pretrained(folder, use_safetensors=True).to(device).eval()
    vectors = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size], truncation=True, padding=True, max_length=max_length, return_tensors="pt"
        ).to(device)
        with torch.inference_mode():
            hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        vectors.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy())
    return np.concatenate(vectors)


def linear_probe(
    folder: str, train: pd.DataFrame, validation: pd.DataFrame, metric: str, max_length: int, seed: int
) -> float:
    """Validation score of a logistic regression on frozen embeddings."""
    from sklearn.linear_model import LogisticRegression

    from tasks.core.metrics import classification_metrics

    classifier = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
    classifier.fit(embed(folder, train["text"].tolist(), max_length), train["label"])
    predicted = classifier.predict(embed(folder, validation["text"].tolist(), max_length))
    labels = sorted(train["label"].unique())
    return classification_metrics(validation["label"].tolist(), predicted.tolist(), labels)["overall"][metric]


def probe_rows(splits: SplitReport, max_rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A stratified sample of at most `max_rows` training rows, and the validation split."""
    train = pd.read_parquet(splits.train.path)
    if len(train) > max_rows:
        share = max_rows / len(train)
        train = train.groupby("label", group_keys=False).sample(frac=share, random_state=seed)
    return train.reset_index(drop=True), pd.read_parquet(splits.validation.path)


def ranked(reports: list[CandidateReport]) -> list[CandidateReport]:
    """The accepted candidates, best probe score first; a tie goes to the smaller model."""
    survivors = [report for report in reports if report.accepted]
    return sorted(survivors, key=lambda report: (-round(report.probe_score or 0.0, 6), report.parameters or 0))


def choose(reports: list[CandidateReport]) -> CandidateReport:
    """The best probe score; a tie goes to the smaller model."""
    survivors = ranked(reports)
    if not survivors:
        listed = "\n  - ".join(f"{report.candidate}: {'; '.join(report.reasons)}" for report in reports)
        raise ModelSelectionError(f"No candidate model passed screening:\n  - {listed}")
    return survivors[0]


def screen_all(
    config: ModelConfig, method: str, batch_size: int, max_length: int, lora_r: int
) -> list[CandidateReport]:
    """Screen every candidate against the memory at hand."""
    budget = memory_budget_gb(config)
    return [
        screen_candidate(name, config, method, batch_size, max_length, lora_r, budget)
        for name in dict.fromkeys(config.candidates)
    ]


def short_finetune_probe(
    report: CandidateReport,
    train: pd.DataFrame,
    splits: SplitReport,
    train_config: TrainConfig,
    eval_config: EvalConfig,
    folder: Path,
) -> float:
    """Validation score after one epoch of fine-tuning on the probe rows."""
    from tasks.data.load import write_table
    from tasks.model.finetune import finetune

    probe_splits = splits.model_copy(update={"train": write_table(train, folder / "train.parquet")})
    quick = train_config.model_copy(update={"epochs": 1, "early_stopping_patience": 0, "refit": "never"})
    model = ModelRef(base_model=report.candidate, path=str(report.path), source=str(report.source))
    trained = finetune(probe_splits, model, quick, eval_config, folder)
    return trained.history[-1].val[eval_config.metric]


def probe_survivors(
    reports: list[CandidateReport],
    config: ModelConfig,
    splits: SplitReport,
    train_config: TrainConfig,
    eval_config: EvalConfig,
    folder: Path,
    log: Any,
) -> None:
    """Give every accepted candidate a probe score (a single candidate needs none)."""
    survivors = [report for report in reports if report.accepted]
    if len(survivors) < 2:
        return
    train, validation = probe_rows(splits, config.probe_max_rows, train_config.seed)
    for number, report in enumerate(survivors):
        started = time.perf_counter()
        if config.probe == "linear":
            length = train_config.max_length or 512  # padding is per batch: short texts stay short
            score = linear_probe(str(report.path), train, validation, eval_config.metric, length, train_config.seed)
        else:
            score = short_finetune_probe(report, train, splits, train_config, eval_config, folder / f"probe-{number}")
        report.probe_score, report.probe_seconds = round(score, 6), round(time.perf_counter() - started, 2)
        log.info(
            "Probe %s (%s): val %s %.4f in %.1f s",
            report.candidate,
            config.probe,
            eval_config.metric,
            score,
            report.probe_seconds,
        )


def selection_table(reports: list[CandidateReport], chosen: str) -> list[dict[str, Any]]:
    """One row per candidate, for the Prefect table artifact and the MLflow comparison table."""
    return [
        {
            "candidate": report.candidate,
            "chosen": report.candidate == chosen,
            "accepted": report.accepted,
            "license": report.license or "unknown",
            "architecture": report.architecture or "",
            "parameters": report.parameters or 0,
            "memory_gb_full": report.memory_gb.get("full"),
            "memory_gb_lora": report.memory_gb.get("lora"),
            "probe_score": report.probe_score,
            "reasons": "; ".join(report.reasons) or "ok",
        }
        for report in reports
    ]


@task(name="select_base_model")
def select_base_model(
    config: ModelConfig, train_config: TrainConfig, eval_config: EvalConfig, splits: SplitReport, folder: Path
) -> SelectionReport:
    """Screen the candidates, probe the survivors, choose one; record why in a table artifact."""
    log = get_run_logger()
    length = train_config.max_length or ESTIMATED_LENGTH
    reports = screen_all(config, train_config.method, train_config.batch_size, length, train_config.lora_r)
    for report in reports:
        log.info("Screened %s: %s", report.candidate, "accepted" if report.accepted else "; ".join(report.reasons))
    probe_survivors(reports, config, splits, train_config, eval_config, folder, log)
    chosen = choose(reports)
    create_table_artifact(
        key="model-selection",
        table=selection_table(reports, chosen.candidate),
        description=f"Base-model screening and {config.probe} probes; chosen: {chosen.candidate}",
    )
    return SelectionReport(
        chosen=ModelRef(base_model=chosen.candidate, path=str(chosen.path), source=str(chosen.source)),
        metric=eval_config.metric,
        probe=config.probe,
        candidates=reports,
    )
