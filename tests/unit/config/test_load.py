from pathlib import Path

import pytest

from tasks.config.load import load_config
from tasks.config.pipeline import PipelineConfig
from tasks.core.errors import ConfigError


def test_defaults_are_valid_and_documented() -> None:
    config = PipelineConfig()
    assert config.split.train_fraction == 0.8
    for section in PipelineConfig.model_fields.values():
        for name, field in section.annotation.model_fields.items():
            assert field.description, f"{name} has no description"


def test_yaml_then_overrides_apply_in_order(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("data:\n  path: tickets.csv\n  text_columns: [subject, body]\nsplit:\n  seed: 3\n")
    config = load_config(path, ["split.seed=9", "validation.max_quarantine_fraction=0.1", "data.labels=[a, b]"])
    assert config.data.path == "tickets.csv"
    assert config.data.text_columns == ["subject", "body"]
    assert config.split.seed == 9
    assert config.validation.max_quarantine_fraction == pytest.approx(0.1)
    assert config.data.labels == ["a", "b"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("split.sed=3", "Unknown config key 'split.sed'. Did you mean 'seed'?"),
        ("spilt.seed=3", "Unknown config section 'spilt'. Did you mean 'split'?"),
        ("seed=3", "write it as section.field=value"),
        ("split.seed", "write it as section.field=value"),
        ("data.format=xls", "data.format: Input should be 'auto', 'csv', 'tsv', 'jsonl', 'parquet', 'disk' or 'hub'"),
        ("split.seed=-1", "split.seed: Input should be greater than or equal to 0"),
        ("split.seed=abc", "split.seed: Input should be a valid integer"),
        ("split.test_fraction=0.3", "split fractions must add up to 1"),
        ("validation.min_text_length=9000", "min_text_length must not exceed"),
    ],
)
def test_bad_override_names_the_key_and_the_fix(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    assert expected in str(caught.value)


def test_unknown_key_in_file_lists_allowed_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("data:\n  text_column: body\n")
    with pytest.raises(ConfigError, match=r"data.text_column: unknown key Did you mean 'text_columns'\?"):
        load_config(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "Config file not found"), ("data: [unclosed", "is not valid YAML"), ("- a\n- b\n", "must hold a mapping")],
)
def test_bad_config_file(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "config.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)
