"""What ships must run as shipped: a bare `tuneloop run`, a Quick run of every deployment and every
schedule's parameters load and validate their data (the real loader and Great Expectations gate)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.config.pipeline import PipelineConfig
from tasks.config.score import ScoreConfig
from tasks.data.load import load_table, table_sha256, text_table
from tasks.data.validate import validate_table
from tests.helpers import ROOT


def effective_parameters() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(what, entrypoint, parameters) of every way a deployment starts a run: a Quick run uses the
    deployment's parameters, a schedule's run those with the schedule's merged over them. The merge
    is Prefect's, shallow: `{**deployment.parameters, **schedule.parameters}`."""
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text(encoding="utf-8"))
    for deployment in spec["deployments"]:
        entrypoint, name = deployment["entrypoint"], deployment["name"]
        base = deployment.get("parameters") or {}
        yield f"{entrypoint} {name}: quick run", entrypoint, base
        for number, schedule in enumerate(deployment.get("schedules") or [], start=1):
            yield f"{entrypoint} {name}: schedule {number}", entrypoint, {**base, **(schedule.get("parameters") or {})}


RUNS = list(effective_parameters())


def test_every_deployment_and_schedule_is_covered() -> None:
    names = [what for what, _, _ in RUNS]
    assert len(names) == 10, names  # 7 deployments (2 of them trial runs, started by sweeps), 3 schedules
    assert sum("schedule" in name for name in names) == 3


def check_loads_and_validates(config: PipelineConfig | ScoreConfig, folder: Path) -> None:
    if isinstance(config, ScoreConfig):  # batch scoring reads texts only (no labels, no gate)
        assert len(text_table(config.data.path, config.data)) >= 100
        return
    for source in filter(None, (config.data.path, config.data.test_path)):
        table = load_table(source, config.data)
        report = validate_table(table, source, table_sha256(table), config.validation, config.data, folder)
        assert report.passed, report.problems
        assert report.clean_rows >= config.validation.min_rows


@pytest.mark.parametrize(("what", "entrypoint", "parameters"), RUNS, ids=[what for what, _, _ in RUNS])
def test_deployment_parameters_load_and_validate_their_data(
    what: str, entrypoint: str, parameters: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(ROOT)  # a worker runs every flow in the project folder (TUNELOOP_ROOT)
    flow = load_flow_from_entrypoint(entrypoint)
    validated = flow.validate_parameters(parameters)  # what the flow run does with them
    default = ScoreConfig() if entrypoint.startswith("flows/score.py") else PipelineConfig()
    check_loads_and_validates(validated.get("config", default), tmp_path)


def test_a_bare_run_loads_and_validates_the_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    check_loads_and_validates(PipelineConfig(), tmp_path)


def form_sections(entrypoint: str) -> set[str]:
    """The sections of the `config` form a deployment of this flow shows (its parameter schema)."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(load_flow_from_entrypoint(str(ROOT / entrypoint))).model_dump_for_openapi()
    config = schema["definitions"][schema["properties"]["config"]["$ref"].rsplit("/", 1)[-1]]
    return set(config["properties"])


def test_the_train_form_has_no_sweep_section_and_the_sweep_form_has_one() -> None:
    train, sweep = form_sections("flows/train.py:train"), form_sections("flows/sweep.py:sweep")
    assert "sweep" not in train and {"data", "train", "promotion"} <= train
    assert sweep == train | {"sweep"}


@pytest.mark.parametrize(
    ("entrypoint", "config", "wrong"),
    [
        ("flows/train.py:train", {"sweep": {"target_f1": 0.9}}, "sweep"),
        ("flows/train.py:train", {"train": {"batch_size": 0}}, "batch_size"),
        ("flows/train.py:train", {"data": {"format": "xlsx"}}, "format"),
        ("flows/sweep.py:sweep", {"sweep": {"target_f1": 2}}, "target_f1"),
        ("flows/sweep.py:sweep", {"sweep": {"search": ["dropout"]}}, "search"),
        ("flows/validate.py:validate_data", {"validation": {"max_quarantine_fraction": -1}}, "max_quarantine"),
        ("flows/score.py:score", {"low_confidence": 1.5}, "low_confidence"),
    ],
)
def test_the_forms_refuse_bad_values(entrypoint: str, config: dict[str, Any], wrong: str) -> None:
    from prefect.exceptions import ParameterTypeError
    from prefect.flows import load_flow_from_entrypoint

    flow = load_flow_from_entrypoint(str(ROOT / entrypoint))
    with pytest.raises(ParameterTypeError, match=wrong):
        flow.validate_parameters({"config": config})
