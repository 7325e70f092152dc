"""The champion/challenger rule and the registry's aliases (candidate, champion, previous) on a
real MLflow SQLite store: promote, promote by hand, roll back step by step, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from tasks.config.promotion import PromotionConfig
from tasks.core.errors import ModelNotFoundError, RegistryError
from tasks.core.metrics import split_metrics
from tasks.core.paired import paired_bootstrap
from tasks.registry.versions import (
    Comparison,
    champion_rule,
    find_version,
    parse_model_uri,
    promote_version,
    register_version,
    resolve_model_uri,
    rollback,
    set_champion,
)
from tasks.tracking.model import log_logged_model


def judged(candidate: list[str], champion: list[str], truth: list[str], **rules: object) -> Comparison:
    """The champion rule on row predictions, as the flow applies it."""
    config = PromotionConfig(**rules)  # type: ignore[arg-type]
    labels = sorted(set(truth))
    return champion_rule(
        split_metrics(truth, candidate, labels),
        split_metrics(truth, champion, labels),
        "3",
        config,
        paired_bootstrap(truth, candidate, champion, config.metric, config.confidence),
    )


# 200 test texts: `ham` 150, `spam` 40, `rare` 10.
TRUTH = ["ham"] * 150 + ["spam"] * 40 + ["rare"] * 10


def flipped(predictions: list[str], rows: range, to: str = "ham") -> list[str]:
    """The predictions with `rows` set to `to`."""
    return [to if index in rows else label for index, label in enumerate(predictions)]


CHAMPION = flipped(TRUTH, range(150, 170))  # misses half of spam


def test_a_clearly_better_candidate_is_eligible_and_a_one_text_gain_is_not() -> None:
    better = judged(list(TRUTH), CHAMPION, TRUTH)
    assert better.eligible and better.interval is not None and better.interval.low > 0
    assert "better with 95% confidence" in better.reason and "to" in better.reason, "the interval is shown"
    one_text = judged(flipped(TRUTH, range(151, 170)), CHAMPION, TRUTH)
    assert one_text.delta is not None and one_text.delta > 0, "higher on the raw difference..."
    assert not one_text.eligible and "cannot tell them apart" in one_text.reason, "...but not significantly"
    tie = judged(CHAMPION, CHAMPION, TRUTH)
    assert not tie.eligible


def test_min_improvement_needs_a_large_enough_measured_gain() -> None:
    small = judged(flipped(TRUTH, range(150, 160)), CHAMPION, TRUTH, min_improvement=0.2)
    assert not small.eligible and "min_improvement 0.2" in small.reason


def test_not_worse_promotes_a_candidate_within_the_margin() -> None:
    champion = flipped(TRUTH, range(150, 152))
    same = judged(flipped(TRUTH, range(152, 154)), champion, TRUTH, rule="not_worse", margin=0.05)
    assert same.eligible and "not worse" in same.reason
    # One text worse (-0.006): within the margin measured, but it may be worse by more (bound -0.017).
    unsure = judged(flipped(TRUTH, range(150, 153)), champion, TRUTH, rule="not_worse", margin=0.01)
    assert unsure.delta is not None and -0.01 < unsure.delta < 0 and not unsure.eligible
    much_worse = judged(CHAMPION, list(TRUTH), TRUTH, rule="not_worse", margin=0.01)
    assert not much_worse.eligible and "may be worse" in much_worse.reason


def test_a_class_regression_blocks_only_when_significant_on_enough_texts() -> None:
    champion = flipped(TRUTH, range(150, 185))  # misses most of spam
    # Far better overall (spam fixed), but `rare` loses 6 of its 10 texts: significant, blocks.
    regression = judged(flipped(TRUTH, range(190, 196)), champion, TRUTH)
    assert regression.interval is not None and regression.interval.low > 0
    assert not regression.eligible and set(regression.regressions) == {"rare"}
    assert "'rare'" in regression.reason and "10 texts" in regression.reason
    # One text of `rare` lost: a raw drop of F1 well above max_class_regression, but not significant.
    one = judged(flipped(TRUTH, range(190, 191)), champion, TRUTH)
    assert one.class_deltas["rare"] < -0.02 and one.eligible
    # Fewer test texts than min_class_support: never blocks.
    assert judged(flipped(TRUTH, range(190, 196)), champion, TRUTH, min_class_support=11).eligible


def test_the_first_candidate_is_eligible() -> None:
    labels = sorted(set(TRUTH))
    first = champion_rule(split_metrics(TRUTH, CHAMPION, labels), None, None, PromotionConfig(), None)
    assert first.eligible and first.reason == "no champion yet" and first.champion is None


def registered(tmp_path: Path, count: int) -> tuple[str, list[str]]:
    """A SQLite store with `count` versions of model `m`, each its own run's logged model (a folder
    holding only tuneloop.json: the registry does not look inside)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "artifacts").as_uri())
    versions = []
    for number in range(count):
        run = client.create_run(experiment)
        model = tmp_path / f"model-{number}"
        model.mkdir()
        (model / "tuneloop.json").write_text(json.dumps({"labels": ["ham", "spam"], "number": number}))
        model_id = log_logged_model(uri, experiment, run.info.run_id, model, {})
        versions.append(register_version(uri, "m", run.info.run_id, model_id, {"dataset_sha256": "abc"}).version)
    return uri, [str(v) for v in versions]


def aliases(uri: str) -> dict[str, str]:
    model = mlflow.MlflowClient(uri, registry_uri=uri).get_registered_model("m")
    return {alias: str(version) for alias, version in model.aliases.items()}


def test_promotions_keep_previous_and_rollback_walks_back(tmp_path: Path) -> None:
    uri, (v1, v2, v3) = registered(tmp_path, 3)
    assert aliases(uri) == {"candidate": v3}
    assert set_champion(uri, "m", v1, "promoted", {}) is None
    assert set_champion(uri, "m", v2, "approved", {"promotion.comment": "looks good"}) == v1
    assert set_champion(uri, "m", v3, "promoted", {}) == v2
    assert aliases(uri) == {"candidate": v3, "champion": v3, "previous": v2}
    tags = find_version(uri, "m", version=v2).tags
    assert tags["promotion.decision"] == "approved" and tags["promotion.replaced_version"] == v1

    assert rollback(uri, "m") == (v3, v2)
    assert aliases(uri) == {"candidate": v3, "champion": v2, "previous": v1}
    assert find_version(uri, "m", version=v3).tags["promotion.decision"] == "rolled_back"
    assert rollback(uri, "m") == (v2, v1)
    assert aliases(uri) == {"candidate": v3, "champion": v1}
    with pytest.raises(RegistryError, match="no previous alias"):
        rollback(uri, "m")


def test_promote_by_hand_and_its_errors(tmp_path: Path) -> None:
    uri, (v1, v2) = registered(tmp_path, 2)
    assert promote_version(uri, "m", v1) is None and promote_version(uri, "m", v2, "hotfix") == v1
    assert find_version(uri, "m", version=v2).tags == {
        "dataset_sha256": "abc",
        "promotion.comment": "hotfix",
        "promotion.decision": "manual",
        "promotion.replaced_version": v1,
    }
    with pytest.raises(RegistryError, match="already the champion"):
        promote_version(uri, "m", v2)
    with pytest.raises(RegistryError, match="no version 9"):
        promote_version(uri, "m", "9")
    with pytest.raises(RegistryError, match="Nothing to roll back to"):
        rollback(uri, "other")


def test_model_uris_resolve_through_the_named_store(tmp_path: Path) -> None:
    uri, (v1, _) = registered(tmp_path, 2)
    promote_version(uri, "m", v1)
    name, version, source = resolve_model_uri("models:/m@champion", uri)
    assert (name, version) == ("m", str(v1)) and source.endswith("/artifacts")  # the logged model's files
    assert resolve_model_uri(f"models:/m/{v1}", uri) == (name, version, source)
    assert parse_model_uri("models:/m@champion") == ("m", "champion", None)
    with pytest.raises(RegistryError, match="has no alias @previous"):
        resolve_model_uri("models:/m@previous", uri)
    with pytest.raises(RegistryError, match="Cannot read model URI"):
        parse_model_uri("models:/m")


def test_registry_commands_answer_bad_input_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from flows.cli import app
    from tests.helpers import free_port

    uri, _ = registered(tmp_path, 1)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    runner = CliRunner()
    unknown = runner.invoke(app, ["compare", "--experiment", "nope"])
    metric = runner.invoke(app, ["compare", "--metric", "loss"])
    version = runner.invoke(app, ["promote", "--name", "m", "--version", "5"])
    assert unknown.exit_code == 2 and "No MLflow experiment named 'nope'" in unknown.output and "e" in unknown.output
    assert metric.exit_code == 2 and "--metric 'loss' is not one of" in metric.output
    assert version.exit_code == 2 and "has no version 5" in version.output
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    down = runner.invoke(app, ["rollback", "--name", "m"])
    assert down.exit_code == 2 and "model registry at http://127.0.0.1" in down.output and "make up" in down.output
    for result in (unknown, metric, version, down):
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_fetched_models_are_cached_under_the_home_folder_by_version(tmp_path: Path, tuneloop_home: Path) -> None:
    from tasks.registry import fetch

    uri, (v1, v2) = registered(tmp_path, 2)
    promote_version(uri, "m", v1)
    first = fetch.fetch_model("models:/m@champion", uri)
    assert first.is_relative_to(tuneloop_home / "model-cache") and first.name == v1
    assert json.loads((first / "tuneloop.json").read_text())["number"] == 0
    assert fetch.fetch_model(f"models:/m/{v1}", uri) == first  # the alias and the number share one copy
    promote_version(uri, "m", v2)
    second = fetch.fetch_model("models:/m@champion", uri)  # the alias moved: the new version is fetched
    assert second.name == v2 and json.loads((second / "tuneloop.json").read_text())["number"] == 1
    assert not list(second.parent.glob(".partial-*")), "no half-downloaded folders are left"

    def no_second_download(*_: object) -> None:
        raise AssertionError("a cached version was downloaded again")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fetch, "download", no_second_download)
        assert fetch.fetch_model("models:/m@champion", uri) == second
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    run = client.get_run(client.get_model_version("m", v2).run_id)
    [logged] = [m for m in client.search_logged_models([run.info.experiment_id]) if m.source_run_id == run.info.run_id]
    model_id = logged.model_id
    assert (fetch.fetch_model(f"models:/{model_id}", uri) / "tuneloop.json").is_file()
    with pytest.raises(ModelNotFoundError, match="Cannot fetch model runs:/nope/model"):
        fetch.fetch_model("runs:/nope/model", uri)
