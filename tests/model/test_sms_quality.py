"""Quality of a real fine-tune: the packaged MiniLM on the SMS Spam Collection with the default
config must reach test macro F1 >= 0.90 (about 11 minutes on 2 CPU cores: `make test-slow`)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_minilm_on_sms_reaches_macro_f1_090(sms_spam: Path) -> None:
    result = CliRunner().invoke(
        app, ["run", "--data", str(sms_spam), "--text-column", "SMS", "--label-column", "Label", "--json"]
    )
    assert result.exit_code == 0, result.output[-2000:]
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and summary["method"] == "full"
    test = summary["metrics"]["test"]
    print(f"SMS test: f1_macro {test['f1_macro']:.4f}, accuracy {test['accuracy']:.4f}")
    assert test["f1_macro"] >= 0.90
    assert test["per_class"]["spam"]["recall"] > 0.8
