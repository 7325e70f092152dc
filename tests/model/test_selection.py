"""Base-model selection on tiny models of different sizes and licenses: the decisions and reasons."""

from pathlib import Path

import pytest

from tasks.config.eval import EvalConfig
from tasks.config.model import ModelConfig
from tasks.config.split import SplitConfig
from tasks.config.train import TrainConfig
from tasks.core.errors import ModelSelectionError
from tasks.data.split import split_table, write_splits
from tasks.model.select import choose, estimate_memory_gb, probe_survivors, screen_all
from tests.helpers.models import build_tiny_bert, build_tiny_vit
from tests.helpers.tables import clean_table


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny candidates: two allowed sizes, a non-permissive license, no license, no text-classification head."""
    root = tmp_path_factory.mktemp("zoo")
    texts = clean_table(40)["text"].tolist()
    return {
        "small": build_tiny_bert(root / "small", texts),
        "wider": build_tiny_bert(root / "wider", texts, hidden_size=64, layers=3),
        "gpl": build_tiny_bert(root / "gpl", texts, license_name="gpl-3.0"),
        "unlicensed": build_tiny_bert(root / "unlicensed", texts, license_name=None),
        "vit": build_tiny_vit(root / "vit"),
    }


def screen(candidates: list[Path], **update: object):
    config = ModelConfig(candidates=[str(path) for path in candidates]).model_copy(update=update)
    return {Path(report.candidate).name: report for report in screen_all(config, "full", 32, 64, 16)}


def test_screening_records_each_decision_with_its_reason(zoo: dict[str, Path]) -> None:
    reports = screen(list(zoo.values()))
    assert reports["small"].accepted and reports["small"].reasons == []
    assert reports["small"].license == "apache-2.0" and reports["small"].architecture == "bert"
    assert reports["wider"].parameters > reports["small"].parameters > 0
    assert reports["gpl"].reasons == ["license gpl-3.0 is not in model.allowed_licenses"]
    assert reports["unlicensed"].reasons[0].startswith("license unknown")
    assert any("architecture vit has no sequence-classification head" in r for r in reports["vit"].reasons)
    assert any("no tokenizer files" in r for r in reports["vit"].reasons)


def test_unknown_license_can_be_allowed(zoo: dict[str, Path]) -> None:
    assert screen([zoo["unlicensed"]], allow_unknown_license=True)["unlicensed"].accepted


def test_oversized_candidate_is_rejected_against_a_small_budget(zoo: dict[str, Path]) -> None:
    wider = screen([zoo["wider"]])["wider"]
    budget = (wider.memory_gb["full"] + screen([zoo["small"]])["small"].memory_gb["full"]) / 2
    reports = screen([zoo["small"], zoo["wider"]], memory_budget_gb=budget)
    assert reports["small"].accepted
    assert not reports["wider"].accepted and "GB available" in reports["wider"].reasons[0]


def test_memory_estimate_grows_with_size_and_lora_saves_optimizer_state() -> None:
    from transformers import BertConfig

    config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12)
    estimate = estimate_memory_gb(22_700_000, config, batch_size=32, max_length=128, lora_r=16)
    assert 0.3 < estimate["full"] < 3 and estimate["lora"] < estimate["full"]
    assert estimate_memory_gb(22_700_000, config, 64, 128, 16)["full"] > estimate["full"]


def test_no_survivor_lists_every_candidate_and_why(zoo: dict[str, Path]) -> None:
    reports = list(screen([zoo["gpl"], zoo["vit"]]).values())
    with pytest.raises(ModelSelectionError) as caught:
        choose(reports)
    message = str(caught.value)
    assert "gpl: license gpl-3.0" in message and "vit: architecture vit" in message


def test_probes_score_the_survivors_and_ties_go_to_the_smaller(zoo: dict[str, Path], tmp_path: Path) -> None:
    import logging

    splits, removed = split_table(clean_table(40), SplitConfig())
    report = write_splits(splits, removed, SplitConfig(), tmp_path / "splits")
    reports = list(screen([zoo["small"], zoo["wider"], zoo["gpl"]]).values())
    config = ModelConfig(candidates=[str(zoo["small"])])
    probe_survivors(reports, config, report, TrainConfig(max_length=32), EvalConfig(), tmp_path, logging.getLogger())
    scored = {Path(r.candidate).name: r.probe_score for r in reports}
    assert scored["gpl"] is None and 0 <= scored["small"] <= 1 and 0 <= scored["wider"] <= 1
    best = choose(reports)
    assert best.probe_score == max(scored["small"], scored["wider"])
    for r in reports:
        r.probe_score = 0.5 if r.accepted else None
    assert Path(choose(reports).candidate).name == "small"


def test_short_finetune_probe_scores_each_survivor(zoo: dict[str, Path], tmp_path: Path) -> None:
    import logging

    splits, removed = split_table(clean_table(40), SplitConfig())
    report = write_splits(splits, removed, SplitConfig(), tmp_path / "splits")
    reports = list(screen([zoo["small"], zoo["wider"]]).values())
    config = ModelConfig(candidates=["x"], probe="short_finetune", probe_max_rows=60)
    probe_survivors(
        reports, config, report, TrainConfig(max_length=32, batch_size=32), EvalConfig(), tmp_path, logging.getLogger()
    )
    assert all(0 <= (r.probe_score or -1) <= 1 and r.probe_seconds for r in reports)
    assert sorted(p.name for p in tmp_path.glob("probe-*")) == ["probe-0", "probe-1"]
