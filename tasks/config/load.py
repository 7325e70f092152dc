"""Reading a config: defaults, updated by a YAML file, then by `--set section.field=value`; errors
name the key and the fix."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar, overload

import yaml
from pydantic import BaseModel, ValidationError

from tasks.config.pipeline import PipelineConfig, SweepPipelineConfig
from tasks.core.errors import ConfigError, first_line

Schema = TypeVar("Schema", bound=PipelineConfig)


def close_match(word: str, choices: list[str]) -> str:
    """' Did you mean X?' when a close match exists."""
    found = difflib.get_close_matches(word, choices, n=1)
    return f" Did you mean '{found[0]}'?" if found else ""


def section_model(name: str, schema: type[PipelineConfig] = PipelineConfig) -> type[BaseModel]:
    """The model of one config section, or a ConfigError listing the sections."""
    sections = list(schema.model_fields)
    if name not in sections and name in SweepPipelineConfig.model_fields:
        raise ConfigError(
            f"The '{name}' section is for sweeps: use it with `tuneloop sweep` (or the sweep flow), not here."
        )
    if name not in sections:
        raise ConfigError(
            f"Unknown config section '{name}'.{close_match(name, sections)} Sections: {', '.join(sections)}."
        )
    model = schema.model_fields[name].annotation
    assert isinstance(model, type) and issubclass(model, BaseModel)
    return model


# Settings, not data: bounds on what the loader reads and on what an error message echoes back.
MAX_CONFIG_BYTES = 1_000_000
MAX_SHOWN = 200


class NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases (`*name`): a few hundred bytes of nested aliases expand to gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ConfigError(
                f"YAML aliases (*name) are not accepted in a tuneloop config (line {mark.line + 1}): write the "
                "value out where it is used."
            )
        return super().compose_node(parent, index)


def read_yaml(text: str, what: str) -> Any:
    """`text` as YAML, bounded in size and without aliases."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{what} is {len(text):,} characters long; a config holds settings, at most {MAX_CONFIG_BYTES:,}. "
            "Point data.path at the data instead of writing it into the config."
        )
    return yaml.load(text, Loader=NoAliasLoader)


def shown(value: Any) -> str:
    """A value as an error message echoes it: its repr, cut to MAX_SHOWN characters."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN]}... ({len(text):,} characters)"


def apply_override(raw: dict[str, Any], assignment: str, schema: type[PipelineConfig] = PipelineConfig) -> None:
    """Apply one `section.field=value` to the raw config dict; the value is read as YAML."""
    key, separator, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not separator or len(parts) != 2 or not all(parts):
        raise ConfigError(
            f"Cannot read --set '{assignment}': write it as section.field=value, e.g. --set split.seed=7."
        )
    section, field = parts
    fields = list(section_model(section, schema).model_fields)
    if field not in fields:
        raise ConfigError(
            f"Unknown config key '{key}'.{close_match(field, fields)} Keys in '{section}': {', '.join(fields)}."
        )
    try:
        value = read_yaml(text, f"--set {key}") if text.strip() else None
    except yaml.YAMLError:
        value = text
    raw.setdefault(section, {})
    if not isinstance(raw[section], dict):
        raise ConfigError(f"Config section '{section}' must be a mapping of keys to values.")
    raw[section][field] = value


def describe_errors(error: ValidationError, schema: type[PipelineConfig] = PipelineConfig) -> str:
    """pydantic's errors as `key: problem (got value)` lines a user can act on."""
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "config"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            section = problem["loc"][0] if len(problem["loc"]) > 1 else None
            allowed = list(section_model(str(section), schema).model_fields) if section else list(schema.model_fields)
            message = f"unknown key{close_match(str(problem['loc'][-1]), allowed)} Allowed: {', '.join(allowed)}"
            lines.append(f"{key}: {message}")
            continue
        got = f" (got {shown(problem['input'])})" if "input" in problem else ""
        lines.append(f"{key}: {message}{got}")
    return "Invalid configuration:\n  - " + "\n  - ".join(lines)


def read_config_file(path: Path) -> dict[str, Any]:
    """The raw mapping in a YAML config file."""
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}. Pass --config with the path of a YAML file.")
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"), f"Config file {path}")
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"Config file {path} is not valid YAML{where}: {error.problem or first_line(error)}."
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"Config file {path} is not valid YAML: {first_line(error)}.") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of sections (data, validation, ...).")
    return raw


def build_config(raw: dict[str, Any], schema: type[Schema]) -> Schema:
    """Validate a raw mapping into the schema (a training run's or a sweep's config)."""
    try:
        return schema.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(describe_errors(error, schema)) from None


@overload
def load_config(path: Path | None = None, overrides: list[str] | None = None) -> PipelineConfig: ...
@overload
def load_config(path: Path | None, overrides: list[str] | None, schema: type[Schema]) -> Schema: ...
def load_config(
    path: Path | None = None, overrides: list[str] | None = None, schema: type[PipelineConfig] = PipelineConfig
) -> PipelineConfig:
    """The defaults, updated by a YAML file, then by `section.field=value` overrides in order. One
    file may serve `tuneloop run` and `tuneloop sweep`: a training run ignores its `sweep` section."""
    raw = read_config_file(path) if path else {}
    for section in set(raw) - set(schema.model_fields):
        if section in SweepPipelineConfig.model_fields:
            raw.pop(section)
    for assignment in overrides or []:
        apply_override(raw, assignment, schema)
    return build_config(raw, schema)
