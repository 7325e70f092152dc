"""Bad input and faults, tried as a new user would: each case asserts the documented exit code, one
clear message (printed once) naming the problem and the fix, no traceback, and that nothing already
stored in the home folder changed. Data that could be misread is read right or refused."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.helpers import ROOT, own_homes

SAMPLE = ROOT / "data/sample/support_tickets.csv"
LABELS = ["account", "billing", "shipping", "technical"]


def labelled(rows: int = 80, labels: list[str] | None = None) -> pd.DataFrame:
    """A clean generic table (text, label) the gate accepts: `rows` rows over `labels`."""
    labels = labels or LABELS
    return pd.DataFrame(
        {
            "text": [f"ticket number {n} about {labels[n % len(labels)]} matters, please help" for n in range(rows)],
            "label": [labels[n % len(labels)] for n in range(rows)],
        }
    )


def stored(home: Path) -> dict[str, str]:
    """Every file under the home folder and its hash."""
    if not home.is_dir():
        return {}
    return {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest() for p in home.rglob("*") if p.is_file()
    }


@pytest.fixture
def seeded_home(tuneloop_home: Path) -> Path:
    """A home that already holds something: an MLflow store with a finished run, which no failed
    command may change."""
    import mlflow

    tuneloop_home.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(f"sqlite:///{tuneloop_home / 'mlflow.db'}")
    experiment = client.create_experiment("kept")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "test/f1_macro", 0.9)
    client.set_terminated(run.info.run_id)
    (tuneloop_home / "keep.txt").write_text("a user's file")
    return tuneloop_home


def write(folder: Path, name: str, content: Any) -> Path:
    path = folder / name
    if isinstance(content, pd.DataFrame):
        if name.endswith(".parquet"):
            content.to_parquet(path)
        elif name.endswith(".jsonl"):
            content.to_json(path, orient="records", lines=True)
        else:
            content.to_csv(path, index=False, sep="\t" if name.endswith(".tsv") else ",")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def case_files(folder: Path) -> dict[str, Path]:
    """The bad (and tricky) files the cases point at."""
    good = labelled()
    files = {
        "empty.csv": write(folder, "empty.csv", ""),
        "header-only.csv": write(folder, "header-only.csv", "text,label\n"),
        "one-class.csv": write(folder, "one-class.csv", labelled(80, ["billing"])),
        "latin1.csv": write(folder, "latin1.csv", "text,label\ncaf\xe9 au lait please,billing\n".encode("latin-1")),
        "noext": write(folder, "noext", "text,label\na,b\n"),
        "semicolon.csv": write(folder, "semicolon.csv", good.to_csv(index=False, sep=";")),
        "dupe-columns.csv": write(folder, "dupe-columns.csv", "text,label,label\nhello there,billing,account\n"),
        "numbers.csv": write(folder, "numbers.csv", labelled(80, ["1", "1.0", "01", "2"])),
        "case.csv": write(folder, "case.csv", labelled(80, ["Billing", "billing", "account", "shipping"])),
        "broken.gz.csv": write(folder, "broken.gz.csv", gzip.compress(good.to_csv(index=False).encode())[:60]),
        "dir": folder / "folder",
        "bad.yaml": write(folder, "bad.yaml", "train:\n  epochs: 3\n   batch_size: 8\n"),
        "list.yaml": write(folder, "list.yaml", "- train\n- eval\n"),
        "texts.txt": write(folder, "texts.txt", "\n\n"),
    }
    (folder / "folder").mkdir()
    files["fifo.csv"] = folder / "fifo.csv"
    os.mkfifo(files["fifo.csv"])  # reading it would block forever
    files["floats.csv"] = write(folder, "floats.csv", labelled(80, ["0.3", "0.30000000000000004", "2", "5"]))
    files["utf16.csv"] = write(folder, "utf16.csv", good.to_csv(index=False).encode("utf-16"))
    files["latin1.txt"] = write(folder, "latin1.txt", "caf\xe9 au lait\n".encode("latin-1"))
    files["NA.csv"] = write(folder, "NA.csv", labelled(80, ["NA", "billing", "shipping", "account"]))
    files["texts.csv"] = write(folder, "texts.csv", good[["text"]])
    files["other-test.csv"] = write(folder, "other-test.csv", labelled(60, ["refunds", "returns"]))
    laughs = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    laughs += [
        f"{name}: &{name} [{', '.join([f'*{before}'] * 9)}]" for before, name in zip("abcdefg", "bcdefgh", strict=True)
    ]
    files["bomb.yaml"] = write(folder, "bomb.yaml", "\n".join([*laughs, "data:", "  labels: *h", ""]))
    files["long.yaml"] = write(folder, "long.yaml", "tracking:\n  run_name: " + "a" * 2_000_000 + "\n")
    files["long-name.yaml"] = write(folder, "long-name.yaml", "tracking:\n  run_name: " + "a" * 200_000 + "\n")
    files["texts-labelled.csv"] = write(folder, "texts-labelled.csv", good)
    lists = good.assign(text=[["Tracking", "not", "updated"]] * len(good))
    files["lists.parquet"] = write(folder, "lists.parquet", lists)
    files["model"] = folder / "model"
    (folder / "model").mkdir()
    (folder / "model" / "tuneloop.json").write_text(json.dumps({"labels": LABELS, "max_length": 32}))
    (folder / "model" / "config.json").write_text("{}")
    (folder / "model" / "model.safetensors").write_bytes(b"truncated")
    return files


# (case, command (with {file} placeholders), environment, exit code, a fragment of the message)
CASES: list[tuple[str, list[str], dict[str, str], int, str]] = [
    ("missing data file", ["validate", "--data", "{folder}/nope.csv"], {}, 2, "Data file not found"),
    ("missing test file", ["validate", "--data", str(SAMPLE), "--test-data", "{folder}/nope.csv"], {}, 2, "not found"),
    ("empty file", ["validate", "--data", "{empty.csv}"], {}, 2, "is empty"),
    ("header only", ["validate", "--data", "{header-only.csv}"], {}, 2, "no data rows"),
    ("wrong label column", ["validate", "--data", str(SAMPLE), "--label-column", "kind"], {}, 2, "'kind'"),
    ("wrong text column", ["validate", "--data", str(SAMPLE), "--text-column", "message"], {}, 2, "'message'"),
    (
        "text column is the label",
        ["validate", "--data", str(SAMPLE), "--text-column", "category"],
        {},
        2,
        "both the label column",
    ),
    ("one class only", ["validate", "--data", "{one-class.csv}"], {}, 3, "class"),
    ("not UTF-8", ["validate", "--data", "{latin1.csv}"], {}, 2, "data.encoding"),
    ("unknown suffix", ["validate", "--data", "{noext}"], {}, 2, "data.format"),
    ("wrong delimiter", ["validate", "--data", "{semicolon.csv}"], {}, 2, "data.delimiter=';'"),
    ("duplicate column names", ["validate", "--data", "{dupe-columns.csv}"], {}, 2, "'label'"),
    ("labels 1, 1.0, 01", ["validate", "--data", "{numbers.csv}"], {}, 2, "'01' = '1' = '1.0'"),
    ("labels differing in case", ["validate", "--data", "{case.csv}"], {}, 2, "'Billing' = 'billing'"),
    ("list column", ["validate", "--data", "{lists.parquet}"], {}, 2, "holds array"),
    ("truncated gzip", ["validate", "--data", "{broken.gz.csv}"], {}, 2, "{broken.gz.csv}"),
    ("a folder that is no dataset", ["validate", "--data", "{dir}"], {}, 2, "save_to_disk"),
    ("missing config file", ["validate", "--config", "{folder}/none.yaml"], {}, 2, "Config file not found"),
    ("YAML syntax error", ["validate", "--config", "{bad.yaml}"], {}, 2, "line 3"),
    ("YAML that is a list", ["validate", "--config", "{list.yaml}"], {}, 2, "mapping of sections"),
    ("unknown section", ["validate", "--set", "traning.epochs=3"], {}, 2, "traning"),
    ("malformed --set", ["validate", "--set", "train.epochs"], {}, 2, "section.field=value"),
    ("bad value", ["validate", "--set", "train.epochs=many"], {}, 2, "epochs"),
    ("out of range", ["validate", "--set", "split.seed=-1"], {}, 2, "seed"),
    ("sweep setting on run", ["run", "--set", "sweep.max_rounds=3"], {}, 2, "tuneloop sweep"),
    ("empty --text", ["predict", "--model", "{model}", "--text", ""], {}, 2, "empty"),
    ("no texts", ["predict", "--model", "{model}"], {}, 2, "--text"),
    ("blank input file", ["predict", "--model", "{model}", "--input", "{texts.txt}"], {}, 2, "no texts"),
    ("damaged model folder", ["predict", "--model", "{model}", "--text", "hello"], {}, 2, "missing or damaged"),
    ("missing model folder", ["predict", "--model", "{folder}/no-model", "--text", "hello"], {}, 2, "no-model"),
    ("missing registered model", ["predict", "--model", "models:/nobody@champion", "--text", "x"], {}, 2, "nobody"),
    ("tracking URI that is no URI", ["compare"], {"MLFLOW_TRACKING_URI": "not a uri"}, 2, "not a tracking URI"),
    ("unknown experiment", ["compare", "--experiment", "nope"], {}, 2, "No MLflow experiment named 'nope'"),
    ("continue an unknown sweep", ["sweep", "--continue", "sweep-nope"], {}, 2, "No sweep 'sweep-nope'"),
    ("continue with other data", ["sweep", "--continue", "sweep-x", "--data", str(SAMPLE)], {}, 2, "--continue runs"),
    ("missing test file names it", ["run", "--test-data", "{folder}/nope.csv"], {}, 2, "data.test_path (--test-data"),
    ("scoring a missing file", ["score", "--data", "{folder}/nope.csv"], {}, 2, "Data file not found"),
    ("a CSV read as Parquet", ["validate", "--data", str(SAMPLE), "--set", "data.format=parquet"], {}, 2, "as parquet"),
    (
        "password in an unreachable tracking URI",
        ["compare"],
        {"MLFLOW_TRACKING_URI": "http://alice:s3cret@127.0.0.1:9"},
        2,
        "http://alice:***@127.0.0.1:9",
    ),
    ("unknown ranking metric", ["compare", "--metric", "nope"], {}, 2, "is not one of f1_macro"),
    ("target above 1", ["sweep", "--target-f1", "2"], {}, 2, "sweep.target_f1"),
    (
        "reversed learning-rate range",
        ["sweep", "--set", "sweep.learning_rate_min=1e-2", "--set", "sweep.learning_rate_max=1e-4"],
        {},
        2,
        "min <= max",
    ),
    ("unknown searched parameter", ["sweep", "--set", "sweep.search=[colour]"], {}, 2, "'colour'"),
    ("promote a missing version", ["promote", "--version", "99"], {}, 2, "has no version 99"),
    ("a FIFO as data", ["validate", "--data", "{fifo.csv}"], {}, 2, "not a regular file or folder"),
    ("a YAML alias bomb", ["validate", "--config", "{bomb.yaml}"], {}, 2, "YAML aliases (*name) are not accepted"),
    ("a config of megabytes", ["validate", "--config", "{long.yaml}"], {}, 2, "a config holds settings"),
    ("a 200 KB value is echoed short", ["validate", "--config", "{long-name.yaml}"], {}, 2, "(200,002 characters)"),
    ("a FIFO as input", ["predict", "--model", "{model}", "--input", "{fifo.csv}"], {}, 2, "not a regular file"),
    ("labels 0.3 and its float", ["validate", "--data", "{floats.csv}"], {}, 2, "'0.3' = '0.30000000000000004'"),
    ("UTF-16 file", ["validate", "--data", "{utf16.csv}"], {}, 2, "set data.encoding=utf-16"),
    ("input not UTF-8", ["predict", "--model", "{model}", "--input", "{latin1.txt}"], {}, 2, "is not UTF-8 text"),
    (
        "the same text column twice",
        ["validate", "--data", str(SAMPLE), "--text-column", "body", "--text-column", "body"],
        {},
        2,
        "'body' more than once",
    ),
    ("a class named NA", ["validate", "--data", "{NA.csv}"], {}, 3, "data.null_labels"),
    (
        "scoring into its own input",
        ["score", "--data", "{texts.csv}", "--output", "{texts.csv}"],
        {},
        2,
        "is the file this run reads",
    ),
    ("roll back without a champion", ["rollback"], {}, 2, "Nothing to roll back to"),
    (
        "the sweep's Postgres is down",
        ["sweep", "--set", "sweep.storage=postgresql://alice:s3cret@127.0.0.1:9/optuna"],
        {},
        2,
        "Optuna storage postgresql://alice:***@127.0.0.1:9/optuna cannot be used",
    ),
    (
        "a sweep storage whose driver is not installed",
        ["sweep", "--set", "sweep.storage=mysql://bob:s3cret@127.0.0.1:9/optuna"],
        {},
        2,
        "fix sweep.storage or TUNELOOP_OPTUNA_STORAGE",
    ),
    (
        "a runs: URI of a run the store does not hold",
        ["predict", "--model", "runs:/0123456789abcdef0123456789abcdef/model", "--text", "x"],
        {},
        2,
        "Cannot fetch model runs:/0123456789abcdef0123456789abcdef/model",
    ),
    (
        "a --set value of megabytes",
        ["validate", "--set", "tracking.run_name=" + "a" * 1_100_000],
        {},
        2,
        "a config holds settings",
    ),
    ("a folder as --input", ["predict", "--model", "{model}", "--input", "{dir}"], {}, 2, "{dir}"),
    (
        "a test file whose labels are all unseen",
        ["validate", "--data", "{texts-labelled.csv}", "--test-data", "{other-test.csv}"],
        {},
        3,
        "No label of the test set",
    ),
    (
        "all unseen, also when quarantining",
        [
            "validate",
            "--data",
            "{texts-labelled.csv}",
            "--test-data",
            "{other-test.csv}",
            "--set",
            "validation.unseen_test_labels=quarantine",
        ],
        {},
        3,
        "Point data.test_path (--test-data) at",
    ),
]


@pytest.mark.parametrize(("case", "command", "env", "code", "message"), CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_clear_message_and_changes_nothing(
    case: str,
    command: list[str],
    env: dict[str, str],
    code: int,
    message: str,
    seeded_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = {"folder": str(tmp_path), **{name: str(path) for name, path in case_files(tmp_path).items()}}

    def fill(text: str) -> str:
        for name, path in files.items():
            text = text.replace("{" + name + "}", path)
        return text

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = stored(tmp_path)  # the home and the case's own input files
    result = CliRunner().invoke(app, [fill(part) for part in command])
    output = result.output
    assert result.exit_code == code, (case, output[-2000:], result.exception)
    assert isinstance(result.exception, SystemExit) and "Traceback" not in output, result.exception
    assert fill(message) in output, output[-2000:]
    assert output.count("error:") == 1, output[-2000:]
    assert "s3cret" not in output, "a password reached the console"
    assert all(stored(tmp_path).get(name) == digest for name, digest in before.items()), "stored files changed"


def test_the_training_file_as_its_own_test_set_is_one_message(seeded_home: Path, tmp_path: Path) -> None:
    """Every training row is also a test row, so none is left to train on: said at the split, with the
    likely cause, instead of a scikit-learn error about n_samples=0 a minute later."""
    import mlflow

    data = write(tmp_path, "tickets.csv", labelled())
    result = CliRunner().invoke(app, ["run", "--data", str(data), "--test-data", str(data)])
    assert result.exit_code == 3 and "Traceback" not in result.output, result.output[-2000:]
    assert "is data.test_path (--test-data) the training file" in result.output and result.output.count("error:") == 1
    kept = mlflow.MlflowClient(f"sqlite:///{seeded_home / 'mlflow.db'}").get_experiment_by_name("kept")
    assert kept is not None and (seeded_home / "keep.txt").read_text() == "a user's file"


def test_tricky_files_are_read_right(tmp_path: Path) -> None:
    """A pandas-written TSV (a quoted tab, newline and quote), an SMS-style TSV whose quotes are text,
    a gzip file named .csv, a JSON array in a .jsonl file, and null-like label spellings."""
    from tasks.config.data import DataConfig
    from tasks.data.load import load_table

    def read(path: Path) -> pd.DataFrame:
        return load_table(str(path), DataConfig(path=str(path)))

    good = labelled(8)
    tricky = good.assign(text=good["text"] + (['\tsecond "part"\nnext line'] + [""] * 7))
    tricky.to_csv(tmp_path / "pandas.tsv", sep="\t", index=False)
    table = read(tmp_path / "pandas.tsv")
    assert len(table) == 8 and table["text"][0].endswith('second "part"\nnext line')
    sms = 'label\ttext\nham\t"Happy valentines day" I know its early\nspam\tWIN "now\nham\tplain\n'
    assert read(write(tmp_path, "sms.tsv", sms))["text"].tolist() == [
        '"Happy valentines day" I know its early',
        'WIN "now',
        "plain",
    ]
    assert len(read(write(tmp_path, "zipped.csv", gzip.compress(good.to_csv(index=False).encode())))) == 8
    assert len(read(write(tmp_path, "array.jsonl", good.to_json(orient="records")))) == 8
    nulls = good.assign(label=["nan", "None", "NULL", " n/a ", "billing", "account", "billing", "account"])
    assert read(write(tmp_path, "nulls.csv", nulls))["label"].isna().sum() == 4


def test_the_sms_collection_reads_every_message(sms_spam: Path) -> None:
    from tasks.config.data import DataConfig
    from tasks.data.load import load_table

    table = load_table(str(sms_spam), DataConfig(path=str(sms_spam), text_columns=["SMS"], label_column="Label"))
    assert len(table) == 5574 and set(table["label"]) == {"ham", "spam"}


def test_test_labels_the_model_never_saw_are_quarantined_or_stop_the_run(tmp_path: Path) -> None:
    data = write(tmp_path, "data.csv", labelled(80))
    unseen = pd.concat([labelled(60), labelled(12, ["refunds"])], ignore_index=True)
    test = write(tmp_path, "test.csv", unseen)
    quarantined = CliRunner().invoke(app, ["validate", "--data", str(data), "--test-data", str(test), "--json"])
    assert quarantined.exit_code == 0, quarantined.output
    report = json.loads(quarantined.stdout.strip().splitlines()[-1])
    assert report["test"]["clean_rows"] == 60 and "never seen in training" in report["test"]["warnings"][-1]
    reasons = pd.read_csv(report["test"]["quarantine_path"])["reason"]
    assert (reasons == "label never seen in training").sum() == 12
    args = ["validate", "--data", str(data), "--test-data", str(test), "--set", "validation.unseen_test_labels=fail"]
    stopped = CliRunner().invoke(app, args)
    assert stopped.exit_code == 3 and "'refunds'" in stopped.output and stopped.output.count("error:") == 1


def test_a_model_is_never_scored_on_labels_it_never_saw(tiny_bert: Path, tmp_path: Path) -> None:
    """The last guard before registration: evaluation refuses a test split with unscorable labels."""
    from tasks.config.eval import EvalConfig
    from tasks.core.errors import DataValidationError
    from tasks.model.evaluate import score_model

    model = tmp_path / "model"
    import shutil

    shutil.copytree(tiny_bert, model)
    (model / "tuneloop.json").write_text(json.dumps({"labels": LABELS, "max_length": 32}))
    frame = labelled(8)
    with pytest.raises(DataValidationError, match="never saw in training: 'refunds'"):
        score_model(model, frame, pd.concat([frame, labelled(2, ["refunds"])]), EvalConfig(), tmp_path / "eval")


def cli(
    *args: str, env: dict[str, str], read_only: Path | None = None, small_disk: tuple[Path, int] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed command in its own process; with `read_only`, that folder is a read-only mount
    (for root, whom a mode of 0500 does not stop), with `small_disk` (folder, MB) a disk of that
    size: a tmpfs in a private mount namespace (skipped where there are none)."""
    command = [str(Path(sys.executable).with_name("tuneloop")), *args]
    mount = None
    if read_only is not None and os.geteuid() == 0:
        mount = f'mount -t tmpfs -o ro tmpfs {read_only} && exec "$@"'
    if small_disk is not None:
        folder, size = small_disk
        mount = f'mount -t tmpfs -o size={size}m tmpfs {folder} && exec "$@"'
    if mount is not None:
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip("no mount namespaces here (unshare -m): a read-only or small disk cannot be made")
        command = ["unshare", "-m", "sh", "-c", mount, "sh", *command]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, timeout=300, cwd=ROOT)


def test_an_unusable_home_and_a_missing_file_fail_at_once(tmp_path: Path) -> None:
    """Checked before any server starts: a home that is a file, or read-only (a read-only mount); a
    missing data file fails in seconds (it used to start Prefect's temporary server first: 31 s)."""
    import time

    plain = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    home_file = write(tmp_path, "home", "a file")
    done = cli("validate", env={**plain, "TUNELOOP_HOME": str(home_file)})
    assert done.returncode == 2 and "is a file, not a folder" in done.stderr and "Traceback" not in done.stderr
    started = time.monotonic()
    missing = cli("run", "--data", str(tmp_path / "missing.csv"), env={**plain, "TUNELOOP_HOME": str(tmp_path / "h")})
    assert missing.returncode == 2 and missing.stderr.count("Data file not found") == 1, missing.stderr
    assert time.monotonic() - started < 20
    # A wrong column is answered from the file's header, before any flow (or its server) starts: no run
    # folder is made, and the message names the setting to change.
    wrong = write(tmp_path, "wrong.csv", "q,intent\nhello there,greet\nbye now,leave\n")
    home = tmp_path / "column-home"
    column = cli("run", "--data", str(wrong), "--text-column", "q", env={**plain, "TUNELOOP_HOME": str(home)})
    assert column.returncode == 2 and "'label' (data.label_column) not found" in column.stderr, column.stderr
    assert "set data.label_column to the column with the label (--label-column)" in column.stderr
    assert not (home / "runs").exists() and "Traceback" not in column.stderr
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    read_only = cli("validate", env={**plain, "TUNELOOP_HOME": str(locked)}, read_only=locked)
    assert read_only.returncode == 2 and "is not writable" in read_only.stderr, read_only.stderr
    assert read_only.stderr.count("error:") == 1 and "Traceback" not in read_only.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["compare"],
        ["predict", "--model", "models:/tuneloop-classifier@champion", "--text", "hello"],
        ["promote", "--version", "1"],
        ["run", "--set", "train.epochs=1"],
    ],
    ids=["compare", "predict", "promote", "run"],
)
def test_a_damaged_tracking_store_is_one_message_and_left_as_it_is(command: list[str], tuneloop_home: Path) -> None:
    """A home whose mlflow.db is not a database (a disk error, a bad copy): every command that needs
    the store says so with the fix, and neither repairs nor replaces the file (it may be restored)."""
    tuneloop_home.mkdir(parents=True)
    damaged = tuneloop_home / "mlflow.db"
    damaged.write_bytes(b"not a database, but somebody's runs may be recoverable from it" * 100)
    before = damaged.read_bytes()
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, (result.output[-2000:], result.exception)
    assert "is damaged: restore it from a backup, or move it aside" in result.output, result.output[-2000:]
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert damaged.read_bytes() == before


@pytest.mark.parametrize(
    "command",
    [
        ["promote", "--version", "1"],
        ["rollback"],
        ["compare"],
        ["predict", "--model", "models:/tuneloop@champion", "--text", "hi"],
    ],
)
def test_a_fresh_home_is_not_given_an_empty_store_to_say_it_holds_nothing(
    command: list[str], tuneloop_home: Path
) -> None:
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2 and "does not exist. Train first (tuneloop run)" in result.output, result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert not (tuneloop_home / "mlflow.db").exists()


def test_a_temporary_prefect_server_that_does_not_start_is_one_message(tmp_path: Path) -> None:
    """Prefect's temporary server that never answers (here: its process exits at once; on a busy
    machine: slow to start) ends the command with one message saying what to do, not Prefect's
    RuntimeError traceback, and the server process is not left behind."""
    script = (
        "import sys\n"
        "import tasks.core.prefect_server as server\n"
        "server.STARTUP_SECONDS = 2\n"
        "server.server_command = lambda port, parent: [sys.executable, '-c', 'raise SystemExit(1)']\n"
        "from flows.cli import main\n"
        "sys.argv = ['tuneloop', 'validate']\n"
        "main()\n"
    )
    env = own_homes(tmp_path, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1")
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "temporary server did not start within 2 s" in done.stderr, done.stderr[-3000:]
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in done.stderr
    assert done.stderr.count("error:") == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]


@pytest.mark.parametrize("command", [["validate"], ["run", "--set", "train.epochs=1"], ["sweep"], ["score"]])
def test_a_prefect_server_that_does_not_answer_is_one_message(command: list[str], tmp_path: Path) -> None:
    """PREFECT_API_URL naming a server that is down (or a port where none listens): the command says so
    with the fix before any flow starts, not with Prefect's traceback, and never shows its password."""
    env = own_homes(tmp_path, PREFECT_API_URL="http://alice:s3cret@127.0.0.1:9/api")
    done = cli(*command, env=env)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "The Prefect server at http://alice:***@127.0.0.1:9/api (PREFECT_API_URL) does not answer" in done.stderr
    assert "Start it (make up)" in done.stderr, done.stderr[-3000:]
    assert done.stderr.count("error:") == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "s3cret" not in done.stderr + done.stdout
    assert not (tmp_path / "home" / "runs").exists() or not any((tmp_path / "home" / "runs").iterdir())


def test_a_url_that_answers_but_is_no_prefect_api_is_one_message(tmp_path: Path) -> None:
    """PREFECT_API_URL naming another server that answers health checks (MLflow's URL by mistake, or
    Prefect's without /api): one message saying to point it at the Prefect API, not a traceback."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class HealthOnly(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path.rstrip("/").endswith("/health") else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), HealthOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        done = cli("validate", env=own_homes(tmp_path, PREFECT_API_URL=url))
    finally:
        server.shutdown()
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"{url} (PREFECT_API_URL) answers, but not as a Prefect API" in done.stderr, done.stderr[-3000:]
    assert "it ends in /api" in done.stderr
    assert done.stderr.count("error:") == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]


@pytest.fixture
def silent_server() -> Any:
    """A TCP server on loopback that accepts every connection and never answers: a stuck tracking server."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://alice:s3cret@127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


@pytest.mark.parametrize("command", [["compare"], ["run", "--data", str(SAMPLE)]], ids=["compare", "run"])
def test_a_tracking_server_that_never_answers_is_reported_in_seconds(
    command: list[str], silent_server: str, seeded_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: 65 s (`compare`) and 252 s (`run`) of MLflow's timeouts and retries, then its error."""
    import time

    monkeypatch.setenv("MLFLOW_TRACKING_URI", silent_server)
    before = stored(seeded_home)
    started = time.monotonic()
    result = CliRunner().invoke(app, command)
    seconds = time.monotonic() - started
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output[-2000:]
    assert "did not answer within 5 s" in result.output and result.output.count("error:") == 1, result.output[-2000:]
    assert "s3cret" not in result.output and seconds < 40, seconds
    assert all(stored(seeded_home).get(name) == digest for name, digest in before.items()), "stored files changed"


@pytest.mark.parametrize("cut", ["header", "weights"])
def test_a_model_whose_weights_file_was_cut_off_is_one_message(
    cut: str, tiny_bert: Path, tmp_path: Path, seeded_home: Path
) -> None:
    """A copy cut off mid-transfer: inside the safetensors header (`invalid header length`), or inside
    the weights after a whole header."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    (model / "tuneloop.json").write_text(json.dumps({"labels": LABELS, "max_length": 32}))
    weights = model / "model.safetensors"
    content = weights.read_bytes()
    weights.write_bytes(content[:6] if cut == "header" else content[: len(content) // 2])
    result = CliRunner().invoke(app, ["predict", "--model", str(model), "--text", "where is my parcel"])
    assert result.exit_code == 2 and "Traceback" not in result.output, (result.output[-2000:], result.exception)
    assert "missing or damaged" in result.output and result.output.count("error:") == 1, result.output[-2000:]


@pytest.mark.parametrize(("megabytes", "message"), [(1, "the disk is full"), (40, "MB free on the disk holding")])
def test_a_full_disk_is_one_message_and_the_run_stays_continuable(
    megabytes: int, message: str, tiny_bert: Path, tmp_path: Path
) -> None:
    """A home on a 1 MB disk fills up in the data gate (before: an OSError traceback); on a 40 MB one the
    data gate fits, and the space check refuses to fine-tune before the first checkpoint (before: the
    save failed with `Errno 28` then a SafetensorError, the run marked failed and lost)."""
    from tests.helpers.configs import on_the_sample

    plain = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    home = tmp_path / "home"
    home.mkdir()
    sets = [part for item in on_the_sample(tiny_bert, 32) for part in ("--set", item)]
    done = cli("run", *sets, env={**plain, "TUNELOOP_HOME": str(home)}, small_disk=(home, megabytes))
    said = done.stderr
    assert done.returncode == 2 and "Traceback" not in said and said.count("error:") == 1, said[-3000:]
    assert message in said and "run the same command again" in said, said[-3000:]


@pytest.mark.parametrize(
    ("error", "status"),
    [(OSError(28, "No space left on device"), "interrupted"), (ValueError("a real failure"), "failed")],
    ids=["disk full", "other failure"],
)
def test_a_run_the_full_disk_stopped_is_continued_by_the_same_command(
    error: Exception, status: str, tuneloop_home: Path
) -> None:
    """The train flow's failure hook: a run that failed because the disk filled up decided nothing, so
    its folder stays continuable (the next run of the same settings and data resumes it from its last
    checkpoint once space is freed); any other failure is the run's outcome."""
    from prefect import flow

    from tasks.config.train import TrainConfig
    from tasks.core.workspace import find_unfinished, open_run_folder, read_record, run_failed

    @flow(on_failure=[run_failed])
    def stops() -> None:
        open_run_folder("train", TrainConfig(), ["the data's stamp"])
        raise error

    assert stops(return_state=True).is_failed()
    [folder] = (tuneloop_home / "runs").glob("*-train-*")
    record = read_record(folder)
    assert record is not None and record.status == status
    fingerprint = record.fingerprint
    assert (find_unfinished(tuneloop_home / "runs", "train", fingerprint) == folder) == (status == "interrupted")
