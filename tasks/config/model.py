"""Which pre-trained base models may be fine-tuned, and how the best one is chosen."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PERMISSIVE_LICENSES = ["apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc-by-4.0", "cc0-1.0", "unlicense"]


class ModelConfig(BaseModel):
    """Which pre-trained models may be fine-tuned, and how the best one is chosen."""

    model_config = ConfigDict(extra="forbid")

    candidates: list[str] = Field(
        default=["sentence-transformers/all-MiniLM-L6-v2"],
        min_length=1,
        max_length=20,
        description="Hugging Face ids or local folders. With one candidate, selection only screens it.",
    )
    revision: str | None = Field(None, description="Git revision of Hub models, for reproducibility.")
    trust_remote_code: bool = Field(
        False,
        description="Allow a model's own Python code to run. Off: only architectures built into transformers load.",
    )
    allowed_licenses: list[str] = Field(
        default=list(PERMISSIVE_LICENSES),
        description="Licenses (model-card ids, lower case) a candidate may carry.",
    )
    allow_unknown_license: bool = Field(False, description="Accept candidates whose model card names no license.")
    probe: Literal["linear", "short_finetune"] = Field(
        "linear",
        description="How survivors are compared: a "
        "logistic regression on frozen mean-pooled embeddings, or "
        "one short fine-tuning epoch.",
    )
    probe_max_rows: int = Field(2000, ge=10, le=10**6, description="Training rows a probe uses at most.")
    memory_budget_gb: float = Field(
        8.0,
        gt=0,
        le=4096,
        description="Memory training may use when there is no GPU (with a GPU, its memory is the budget).",
    )
