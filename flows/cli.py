"""The `tuneloop` command: a thin shell over the flows. Bad input ends in one line on stderr and
a non-zero exit code; with --json the last line of stdout is one JSON object."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Fine-tune pre-trained Hugging Face models on your labelled text, inside Prefect "
    "flows, and keep tuning until the model is good enough.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML file with config sections (data, validation, split, ...).")
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override one setting: section.field=value (repeatable).")
]
DataOption = Annotated[
    str | None,
    typer.Option(
        "--data", "-d", help="Labelled text: CSV, TSV, JSONL, Parquet, a save_to_disk folder or a Hub dataset id."
    ),
]
TestDataOption = Annotated[
    str | None,
    typer.Option(
        "--test-data", help="A separate test set with the same columns; the data is then split into train/validation."
    ),
]
TextOption = Annotated[
    list[str] | None, typer.Option("--text-column", "-t", help="Column with the text (repeat to join several).")
]
LabelOption = Annotated[str | None, typer.Option("--label-column", "-l", help="Column with the label.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object (last line).")]


def configure_environment() -> None:
    """Offline-friendly defaults, set before Prefect or MLflow are imported: no telemetry, and
    Prefect's task results kept under the tuneloop home folder."""
    from tasks.workspace import tuneloop_home

    for name, value in {
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "False",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(tuneloop_home() / "prefect-results"))


class HideKnownTracebacks(logging.Filter):
    """Prefect logs a failed task's traceback; for errors that are the user's to fix, the one-line
    message the command prints is enough on the console (the Prefect UI keeps the full record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tasks.errors import TuneloopError

        # The message itself is printed once by the command; drop the record that repeats it.
        return not (record.exc_info and isinstance(record.exc_info[1], TuneloopError))


def quiet_known_tracebacks() -> None:
    """Install HideKnownTracebacks on the console handlers Prefect has set up."""
    import prefect  # noqa: F401  (sets up Prefect's logging handlers)

    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(HideKnownTracebacks())


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn TuneloopError into one message on stderr and its exit code."""
    from tasks.errors import TuneloopError

    try:
        yield
    except TuneloopError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None


def resolve_config(
    config: Path | None,
    overrides: list[str] | None,
    data: str | None = None,
    test_data: str | None = None,
    text_columns: list[str] | None = None,
    label_column: str | None = None,
) -> Any:
    """The PipelineConfig from defaults, --config, the shortcut options, then --set."""
    from tasks.config import load_config

    shortcuts = []
    if data is not None:
        shortcuts.append(f"data.path={json.dumps(data)}")
    if test_data is not None:
        shortcuts.append(f"data.test_path={json.dumps(test_data)}")
    if text_columns:
        shortcuts.append(f"data.text_columns={json.dumps(text_columns)}")
    if label_column is not None:
        shortcuts.append(f"data.label_column={json.dumps(label_column)}")
    return load_config(config, shortcuts + list(overrides or []))


def emit_json(payload: dict[str, Any]) -> None:
    """One JSON object on the last line of stdout."""
    typer.echo(json.dumps(payload, default=str))


@app.command()
def validate(
    data: DataOption = None,
    test_data: TestDataOption = None,
    text_column: TextOption = None,
    label_column: LabelOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check labelled text against the dataset contract; quarantine bad rows; report."""
    with user_errors():
        pipeline = resolve_config(config, set_, data, test_data, text_column, label_column)
        quiet_known_tracebacks()
        from flows.validate import validate_data

        report = validate_data(config=pipeline)
    if as_json:
        emit_json({"status": "passed", **report.model_dump(mode="json")})
        return
    for part in filter(None, (report.data, report.test)):
        typer.echo(
            f"Data OK: {part.source}: {part.rows} rows, {part.clean_rows} clean, "
            f"{part.quarantined_rows} quarantined ({part.quarantine_fraction:.1%})."
        )
        for warning in part.warnings:
            typer.echo(f"  warning: {warning}")
        typer.echo(f"  summary: {part.summary_path}")
        if part.quarantine_path:
            typer.echo(f"  quarantine: {part.quarantine_path}")
        if part.data_docs_path:
            typer.echo(f"  data docs: {part.data_docs_path}")


@app.command()
def run(
    data: DataOption = None,
    test_data: TestDataOption = None,
    text_column: TextOption = None,
    label_column: LabelOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the pipeline: load, validate, split (then fine-tune, evaluate and track as they land)."""
    with user_errors():
        pipeline = resolve_config(config, set_, data, test_data, text_column, label_column)
        quiet_known_tracebacks()
        from flows.train import train

        result = train(config=pipeline)
    if as_json:
        emit_json({"status": "completed", **result.model_dump(mode="json")})
        return
    splits = result.splits
    typer.echo(f"Run folder: {result.folder}")
    typer.echo(f"Data: {result.data.data.clean_rows} clean rows, {result.data.data.quarantined_rows} quarantined.")
    typer.echo(
        f"Splits: train {splits.train.rows}, validation {splits.validation.rows}, test {splits.test.rows} "
        f"(overlap {sum(splits.overlap.values())})."
    )


@app.command("config")
def show_config(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Print the effective configuration as YAML (defaults, --config, then --set)."""
    import yaml

    with user_errors():
        pipeline = resolve_config(config, set_)
    typer.echo(yaml.safe_dump(pipeline.model_dump(mode="json"), sort_keys=False).rstrip())


def main() -> None:
    """Console entry point."""
    configure_environment()
    sys.exit(app())


if __name__ == "__main__":
    main()
