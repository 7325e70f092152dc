"""`PipelineConfig`: every setting of a run, grouped by step. It is the flows' parameter, so Prefect
renders it as the run form; the command line loads it from YAML and `--set section.field=value`."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks.data import DataConfig
from tasks.errors import ConfigError, first_line
from tasks.evaluate import EvalConfig
from tasks.finetune import TrainConfig
from tasks.registry import PromotionConfig
from tasks.select import ModelConfig
from tasks.split import SplitConfig
from tasks.sweep import SweepConfig
from tasks.track import TrackingConfig
from tasks.validate import ValidationConfig


class PipelineConfig(BaseModel):
    """All settings of a tuneloop run. Endpoints and secrets (MLflow URI, tokens) come from the
    environment, never from here."""

    model_config = ConfigDict(extra="forbid")

    data: DataConfig = Field(default_factory=DataConfig, description="Where the labelled text is.")
    validation: ValidationConfig = Field(default_factory=ValidationConfig, description="The data-quality gate.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Train/validation/test split.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The pre-trained base model.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Fine-tuning.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Scoring and the quality gate.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow experiment and run.")
    sweep: SweepConfig = Field(default_factory=SweepConfig, description="Hyperparameter sweeps (tuneloop sweep).")
    promotion: PromotionConfig = Field(
        default_factory=PromotionConfig, description="Model registry: register, compare with the champion, promote."
    )

    @model_validator(mode="after")
    def _registry_needs_the_model(self) -> PipelineConfig:
        if self.promotion.register_model and not self.tracking.log_model:
            raise ValueError(
                "promotion.register_model needs tracking.log_model (a registered version points at the logged model): "
                "set tracking.log_model=true or promotion.register_model=false"
            )
        return self


def close_match(word: str, choices: list[str]) -> str:
    """' Did you mean X?' when a close match exists."""
    found = difflib.get_close_matches(word, choices, n=1)
    return f" Did you mean '{found[0]}'?" if found else ""


def section_model(name: str) -> type[BaseModel]:
    """The model of one config section, or a ConfigError listing the sections."""
    sections = list(PipelineConfig.model_fields)
    if name not in sections:
        raise ConfigError(
            f"Unknown config section '{name}'.{close_match(name, sections)} Sections: {', '.join(sections)}."
        )
    return PipelineConfig.model_fields[name].annotation  # type: ignore[return-value]


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `section.field=value` to the raw config dict; the value is read as YAML."""
    key, separator, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not separator or len(parts) != 2 or not all(parts):
        raise ConfigError(
            f"Cannot read --set '{assignment}': write it as section.field=value, e.g. --set split.seed=7."
        )
    section, field = parts
    fields = list(section_model(section).model_fields)
    if field not in fields:
        raise ConfigError(
            f"Unknown config key '{key}'.{close_match(field, fields)} Keys in '{section}': {', '.join(fields)}."
        )
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    raw.setdefault(section, {})
    if not isinstance(raw[section], dict):
        raise ConfigError(f"Config section '{section}' must be a mapping of keys to values.")
    raw[section][field] = value


def describe_errors(error: ValidationError) -> str:
    """pydantic's errors as `key: problem (got value)` lines a user can act on."""
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "config"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            section = problem["loc"][0] if len(problem["loc"]) > 1 else None
            allowed = list(section_model(str(section)).model_fields) if section else list(PipelineConfig.model_fields)
            message = f"unknown key{close_match(str(problem['loc'][-1]), allowed)} Allowed: {', '.join(allowed)}"
            lines.append(f"{key}: {message}")
            continue
        shown = problem.get("input")
        lines.append(f"{key}: {message} (got {shown!r})" if "input" in problem else f"{key}: {message}")
    return "Invalid configuration:\n  - " + "\n  - ".join(lines)


def read_config_file(path: Path) -> dict[str, Any]:
    """The raw mapping in a YAML config file."""
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}. Pass --config with the path of a YAML file.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"Config file {path} is not valid YAML: {first_line(error)}.") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of sections (data, validation, ...).")
    return raw


def build_config(raw: dict[str, Any]) -> PipelineConfig:
    """Validate a raw mapping into a PipelineConfig."""
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(describe_errors(error)) from None


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """The defaults, updated by a YAML file, then by `section.field=value` overrides in order."""
    raw = read_config_file(path) if path else {}
    for assignment in overrides or []:
        apply_override(raw, assignment)
    return build_config(raw)
