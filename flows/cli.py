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


def prepare_run(config: Path | None, overrides: list[str] | None, *shortcuts: Any) -> Any:
    """The run's config, read before any flow starts (bad values cost nothing), and a quiet console."""
    from tasks.errors import ConfigError

    pipeline = resolve_config(config, overrides, *shortcuts)
    from prefect.settings import PREFECT_API_URL

    if pipeline.promotion.mode == "approval" and not PREFECT_API_URL.value():
        raise ConfigError(
            "promotion.mode=approval pauses the run until someone answers its form in the Prefect UI, and this "
            "run has no Prefect server (PREFECT_API_URL is unset): start one (make up; eval $(make -s env)), or "
            "use promotion.mode=auto or never."
        )
    quiet_known_tracebacks()
    return pipeline


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
        pipeline = prepare_run(config, set_, data, test_data, text_column, label_column)
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


def run_summary(result: Any) -> dict[str, Any]:
    """The facts of a training run, as printed with --json."""
    metrics = {split: getattr(result.evaluation, split).model_dump() for split in ("val", "test")}
    return {
        "status": "completed",
        "run_id": result.tracking.run_id,
        "experiment": result.tracking.experiment,
        "tracking_uri": result.tracking.uri,
        "base_model": result.model.base_model,
        "method": result.model.method,
        "device": result.model.device,
        "precision": result.model.precision,
        "best_epoch": result.model.best_epoch,
        "epochs": len(result.model.history),
        "train_seconds": result.model.train_seconds,
        "plan": result.model.plan.model_dump(),
        "metrics": metrics,
        "run_folder": result.folder,
        "model_path": result.model.path,
        "quarantined_rows": result.data.data.quarantined_rows,
        "baseline": {
            "name": result.baseline.name,
            "val": result.baseline.val.model_dump(),
            "test": result.baseline.test.model_dump(),
        },
        "verdict": result.verdict,
        "candidates": [candidate.model_dump() for candidate in result.selection.candidates],
        "promotion": result.promotion.model_dump(mode="json") if result.promotion else None,
    }


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
    """Run the pipeline: validate, split, fine-tune, evaluate and log to MLflow."""
    with user_errors():
        pipeline = prepare_run(config, set_, data, test_data, text_column, label_column)
        from flows.train import train

        result = train(config=pipeline)
    summary = run_summary(result)
    if as_json:
        emit_json(summary)
        return
    test, val = summary["metrics"]["test"], summary["metrics"]["val"]
    how = f"{summary['method']}, {summary['device']}, {summary['precision']}"
    typer.echo(
        f"Fine-tuned {summary['base_model']} ({how}), best epoch {summary['best_epoch']} of {summary['epochs']} "
        f"({summary['train_seconds']:.0f} s)."
    )
    typer.echo(f"  validation: accuracy {val['accuracy']:.4f}, f1_macro {val['f1_macro']:.4f}")
    typer.echo(
        f"  test:       accuracy {test['accuracy']:.4f}, f1_macro {test['f1_macro']:.4f}, "
        f"f1_weighted {test['f1_weighted']:.4f}"
    )
    baseline = summary["baseline"]["test"]
    typer.echo(f"  baseline:   {summary['baseline']['name']} test f1_macro {baseline['f1_macro']:.4f}")
    typer.echo(f"  {summary['verdict']}")
    typer.echo(f"  model:      {summary['model_path']}")
    typer.echo(f"  run folder: {summary['run_folder']}")
    typer.echo(f"  MLflow:     run {summary['run_id']} in experiment '{summary['experiment']}'")
    typer.echo(f"  open it:    {result.tracking.link}")
    if result.promotion:
        typer.echo(f"  registry:   {result.promotion.message}")


@app.command()
def predict(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="A run's model folder, or an MLflow URI (runs:/<run_id>/model, models:/<name>@<alias>).",
        ),
    ],
    text: Annotated[list[str] | None, typer.Option("--text", help="A text to label (repeatable).")] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="A file of texts: one per line (.txt), or a CSV/TSV/JSONL/Parquet with a `text` column.",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=4096, help="Texts per batch.")] = 64,
    as_json: JsonOption = False,
) -> None:
    """Label texts with a fine-tuned model; print labels and probabilities."""
    with user_errors():
        texts = read_texts(text, input_file)
        from tasks.predict import load_classifier, predict_texts

        results = predict_texts(load_classifier(model), texts, batch_size)
    if as_json:
        emit_json({"model": model, "predictions": [{"text": t, **r} for t, r in zip(texts, results, strict=True)]})
        return
    for line, result in zip(texts, results, strict=True):
        shown = line if len(line) <= 60 else line[:57] + "..."
        typer.echo(f"{result['label']}\t{result['probabilities'][result['label']]:.3f}\t{shown}")


def read_texts(texts: list[str] | None, input_file: Path | None) -> list[str]:
    """The texts to label, from --text or --input (exactly one of them)."""
    from tasks.errors import ConfigError

    if bool(texts) == bool(input_file):
        raise ConfigError("Give texts with --text TEXT (repeatable) or --input FILE, not both and not neither.")
    if texts:
        return list(texts)
    assert input_file is not None
    if input_file.suffix.lower() in (".txt", ""):
        if not input_file.is_file():
            raise ConfigError(f"Input file not found: {input_file}.")
        lines = [line for line in input_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        from tasks.data import DataConfig, read_source

        frame = read_source(str(input_file), DataConfig(path=str(input_file)))
        if "text" not in frame.columns:
            raise ConfigError(f"{input_file} has no `text` column (columns: {', '.join(map(str, frame.columns))}).")
        lines = frame["text"].dropna().astype(str).tolist()
    if not lines:
        raise ConfigError(f"{input_file} holds no texts.")
    return lines


@app.command()
def sweep(
    data: DataOption = None,
    test_data: TestDataOption = None,
    text_column: TextOption = None,
    label_column: LabelOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    target_f1: Annotated[float | None, typer.Option(help="Validation score to reach (0-1).")] = None,
    metric: Annotated[str | None, typer.Option(help="f1_macro or f1_weighted.")] = None,
    trials_per_round: Annotated[int | None, typer.Option(help="Trials per round.")] = None,
    max_rounds: Annotated[int | None, typer.Option(help="Most rounds.")] = None,
    max_trials: Annotated[int | None, typer.Option(help="Most trials over all rounds.")] = None,
    max_hours: Annotated[float | None, typer.Option(help="Most hours from the start.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Tune hyperparameters in rounds (Optuna, pruning) until validation F1 reaches the target."""
    sweep_options = {
        "target_f1": target_f1,
        "metric": metric,
        "trials_per_round": trials_per_round,
        "max_rounds": max_rounds,
        "max_trials": max_trials,
        "max_hours": max_hours,
    }
    overrides = [f"sweep.{key}={value}" for key, value in sweep_options.items() if value is not None]
    with user_errors():
        pipeline = prepare_run(config, overrides + list(set_ or []), data, test_data, text_column, label_column)
        from flows.sweep import sweep as sweep_flow

        result = sweep_flow(config=pipeline)
    if as_json:
        emit_json({"status": result.outcome, **result.model_dump(mode="json")})
        return
    typer.echo(result.message)
    typer.echo(f"  sweep {result.sweep_id}: {result.rounds} round(s), {result.trials} trials ({result.pruned} pruned)")
    if result.searched:
        typer.echo(f"  searched: {'; '.join(result.searched)}")
    if result.best_model_path:
        typer.echo(f"  best trial {result.best_trial}: {result.best_score:.4f}, model {result.best_model_path}")
    typer.echo(f"  MLflow parent run: {result.parent_run_id}")
    if result.promotion:
        typer.echo(f"  registry: {result.promotion.message}")
    if result.outcome == "budget_spent":
        raise typer.Exit(5)


@app.command()
def models(
    candidates: Annotated[
        list[str] | None, typer.Option("--candidates", help="Hugging Face ids or local folders (repeatable).")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    as_json: JsonOption = False,
) -> None:
    """Screen candidate base models (license, task fit, weights, tokenizer, size) without training."""
    with user_errors():
        overrides = [f"model.candidates={json.dumps(candidates)}"] if candidates else []
        pipeline = resolve_config(config, overrides + list(set_ or []))
        from tasks.select import ESTIMATED_LENGTH, screen_all, selection_table

        train = pipeline.train
        length = train.max_length or ESTIMATED_LENGTH
        reports = screen_all(pipeline.model, train.method, train.batch_size, length, train.lora_r)
    rows = selection_table(reports, chosen="")
    if as_json:
        emit_json({"candidates": [report.model_dump() for report in reports]})
        return
    for row in rows:
        status = "ok      " if row["accepted"] else "rejected"
        size = f"{row['parameters'] / 1e6:.1f}M params" if row["parameters"] else "size unknown"
        memory = f"~{row[f'memory_gb_{train.method}']} GB ({train.method})" if row["memory_gb_full"] else ""
        typer.echo(
            f"{status} {row['candidate']}  license {row['license']}, {row['architecture'] or '?'}, {size} {memory}"
        )
        if not row["accepted"]:
            typer.echo(f"         {row['reasons']}")


NameOption = Annotated[
    str | None, typer.Option("--name", help="Registered model name (default: promotion.model_name of the config).")
]


def registry_target(config: Path | None, set_: list[str] | None, name: str | None) -> tuple[str, str]:
    """The tracking store (which is also the registry) and the registered model's name."""
    from tasks.track import configure_tracking

    return configure_tracking(), name or resolve_config(config, set_).promotion.model_name


@app.command()
def promote(
    version: Annotated[int, typer.Option("--version", "-v", min=1, help="The model version to make champion.")],
    name: NameOption = None,
    comment: Annotated[str, typer.Option(help="Why; stored as a tag on the version.")] = "",
    config: ConfigOption = None,
    set_: SetOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make a registered model version the champion; the old champion becomes `previous`."""
    with user_errors():
        uri, model = registry_target(config, set_, name)
        from tasks.registry import promote_version, registry_errors

        with registry_errors(uri):
            replaced = promote_version(uri, model, str(version), comment)
    if as_json:
        emit_json({"name": model, "champion": str(version), "previous": replaced})
        return
    typer.echo(f"{model} v{version} is now the champion" + (f"; v{replaced} is `previous`." if replaced else "."))


@app.command()
def rollback(
    name: NameOption = None, config: ConfigOption = None, set_: SetOption = None, as_json: JsonOption = False
) -> None:
    """Make the `previous` version the champion again (step by step through earlier champions)."""
    with user_errors():
        uri, model = registry_target(config, set_, name)
        from tasks.registry import registry_errors
        from tasks.registry import rollback as roll_back

        with registry_errors(uri):
            old, new = roll_back(uri, model)
    if as_json:
        emit_json({"name": model, "champion": new, "rolled_back": old})
        return
    typer.echo(f"{model}: champion rolled back from v{old} to v{new}.")


@app.command()
def compare(
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment (default: tracking.experiment; every one with --sweep).")
    ] = None,
    sweep_id: Annotated[str | None, typer.Option("--sweep", help="Only the trials of this sweep id.")] = None,
    top: Annotated[int, typer.Option(min=1, max=1000, help="How many runs to list.")] = 10,
    metric: Annotated[str, typer.Option(help="f1_macro, f1_weighted or accuracy: the ranking score.")] = "f1_macro",
    config: ConfigOption = None,
    set_: SetOption = None,
    as_json: JsonOption = False,
) -> None:
    """A leaderboard of training runs and sweep trials from MLflow, best validation score first."""
    from tasks.errors import ConfigError

    with user_errors():
        if metric not in ("f1_macro", "f1_weighted", "accuracy"):
            raise ConfigError(f"--metric {metric!r} is not one of f1_macro, f1_weighted, accuracy.")
        if experiment is None and sweep_id is None:
            experiment = resolve_config(config, set_).tracking.experiment
        from tasks.compare import leaderboard, read_runs
        from tasks.track import configure_tracking

        rows = leaderboard(read_runs(configure_tracking(), experiment, sweep_id), metric, top)
    if as_json:
        emit_json(
            {"metric": metric, "experiment": experiment, "sweep_id": sweep_id, "runs": [r.model_dump() for r in rows]}
        )
        return
    if not rows:
        typer.echo("No runs found." + ("" if sweep_id else f" Experiment: {experiment}."))
        return
    typer.echo(f"{'#':>3}  {'best val':>8}  {'test':>6}  {'kind':<8} {'round':>5} {'trial':>5}  run / parameters")
    for row in rows:
        best = "" if row.best_val is None else f"{row.best_val:.4f}"
        test = "" if row.test is None else f"{row.test:.4f}"
        params = " ".join(f"{k.removeprefix('train.')}={v}" for k, v in row.params.items())
        typer.echo(
            f"{row.rank:>3}  {best:>8}  {test:>6}  {row.kind:<8} {row.round or '':>5} "
            f"{'' if row.trial is None else row.trial:>5}  {row.run_name}{' (pruned)' if row.pruned else ''}  {params}"
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
