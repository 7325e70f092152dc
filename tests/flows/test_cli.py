"""The `tuneloop` command against bad input: one clear message, a non-zero exit, no traceback,
and the report or quarantine file wherever rows could be isolated."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.helpers import ROOT
from tests.helpers.tables import clean_table, write_csv

runner = CliRunner()


def bad_rows(column: str, value: object, share: float = 0.2):
    def change(table: pd.DataFrame) -> pd.DataFrame:
        table.loc[table.sample(frac=share, random_state=0).index, column] = value
        return table

    return change


def conflicting(table: pd.DataFrame) -> pd.DataFrame:
    twins = table.iloc[::4].copy()
    twins["id"] += "-twin"
    twins["label"] = twins["label"].map({"billing": "shipping", "shipping": "technical", "technical": "billing"})
    return pd.concat([table, twins], ignore_index=True)


def one_example_class(table: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([table, pd.DataFrame([{"id": "r1", "text": "a rare request", "label": "rare"}])])


TABLE_CASES = {
    "one class": (lambda table: table.assign(label="billing"), "min_classes: 1 class(es) ['billing']", False),
    "class with 1 example": (one_example_class, "'rare' has 1 (each class needs at least 10)", False),
    "null labels": (bad_rows("label", None), "label is missing", True),
    "label outside set": (bad_rows("label", "refnd"), "label is not one of data.labels (e.g. id", True),
    "100k-character texts": (bad_rows("text", "y" * 100_000), "text length outside", True),
    "same text, two labels": (conflicting, "the same text carries different labels", True),
}
LABELS_SET = "data.labels=[billing, shipping, technical]"


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


def error_message(output: str) -> str:
    """What the command printed from its `error:` line on (Prefect's run log comes before it)."""
    assert "error: " in output, output
    return output[output.index("error: ") :]


@pytest.mark.parametrize("case", list(TABLE_CASES))
def test_unfit_data_is_one_message_and_exit_3(tmp_path: Path, tuneloop_home: Path, case: str) -> None:
    change, expected, quarantined = TABLE_CASES[case]
    path = write_csv(change(clean_table()), tmp_path / "data.csv")
    labels = LABELS_SET if case == "label outside set" else "data.labels=null"
    result = invoke("validate", "--data", path, "--set", "data.id_column=id", "--set", labels)
    assert result.exit_code == 3, result.output
    message = error_message(result.output)
    assert message.startswith("error: Data validation failed") and expected in message
    folder = next((tuneloop_home / "runs").glob("*/validation"))
    assert (folder / "summary.json").is_file()
    assert (folder / "quarantine.csv").is_file() == quarantined


FILE_CASES = {
    "missing file": (None, "Data file not found"),
    "empty file": (b"", "Data file is empty"),
    "header only": (b"text,label\n", "has no data rows"),
    "wrong delimiter": (b"text;label\nhello;a\n", "set data.delimiter=';'"),
    "missing column": (b"body,label\nhello,a\n", "Column 'text' (data.text_columns) not found"),
    "non-UTF-8 bytes": (b"text,label\nh\xe9llo,a\n", "not valid utf-8 text"),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_unreadable_file_is_one_message_and_exit_2(tmp_path: Path, case: str) -> None:
    content, expected = FILE_CASES[case]
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_bytes(content)
    result = invoke("validate", "--data", str(path))
    assert result.exit_code == 2
    message = error_message(result.output)
    assert expected in message and message.count("\n") == 1


def test_numeric_text_column_in_parquet(tmp_path: Path) -> None:
    pd.DataFrame({"text": range(60), "label": ["a", "b"] * 30}).to_parquet(tmp_path / "n.parquet")
    result = invoke("run", "--data", str(tmp_path / "n.parquet"))
    assert result.exit_code == 2 and "holds int64 values, not text" in result.output


def test_bad_config_value_fails_before_any_flow_runs(tuneloop_home: Path) -> None:
    result = invoke("run", "--set", "split.seed=minus one")
    assert result.exit_code == 2 and "split.seed: Input should be a valid integer" in result.output
    assert not (tuneloop_home / "runs").exists()


def test_validate_json_reports_the_sample(tmp_path: Path) -> None:
    result = invoke(
        "validate",
        "--config",
        str(ROOT / "data/sample/config.yaml"),
        "--data",
        str(ROOT / "data/sample/support_tickets.csv"),
        "--json",
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert payload["status"] == "passed" and payload["data"]["quarantined_rows"] == 7


def test_real_console_command_prints_no_traceback(tmp_path: Path, prefect_server: str) -> None:
    """The installed entry point in its own process, with Prefect's console logging as users see it."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    command = [str(Path(sys.executable).with_name("tuneloop")), "validate", "--data", str(tmp_path / "nope.csv")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.strip().splitlines()[-1].startswith("error: Data file not found")
    said = [line for line in (done.stderr + done.stdout).splitlines() if "Data file not found" in line]
    assert len(said) == 1, said  # not again in Prefect's "Finished in state Failed(...)" lines


def test_the_command_line_imports_prefect_only_after_setting_its_environment() -> None:
    """Prefect reads its settings once, at import: the environment must be set before that."""
    code = "import sys, flows.cli; print('prefect' in sys.modules, 'mlflow' in sys.modules, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.stdout.split() == ["False", "False", "False"], done.stderr


def test_task_results_land_under_the_home_folder(tmp_path: Path, prefect_server: str) -> None:
    """The persisted results of the cached steps go to <TUNELOOP_HOME>/prefect-results, not ~/.prefect."""
    home, user = tmp_path / "home", tmp_path / "user"
    names = ("PREFECT_LOCAL_STORAGE_PATH", "PREFECT_RESULTS_LOCAL_STORAGE_PATH", "PREFECT_HOME")
    env = {key: value for key, value in os.environ.items() if key not in names}
    env.update({"PREFECT_API_URL": prefect_server, "TUNELOOP_HOME": str(home), "HOME": str(user)})
    command = [
        str(Path(sys.executable).with_name("tuneloop")),
        "validate",
        "--config",
        str(ROOT / "data/sample/config.yaml"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    stored = [path for path in (home / "prefect-results").rglob("*") if path.is_file()]
    assert len(stored) >= 2  # load_dataset and validate_dataset persist their results
    assert not (user / ".prefect" / "storage").exists()
