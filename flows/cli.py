"""The `tuneloop` command: a thin shell over the flows. Bad input ends in one line on stderr and
a non-zero exit code; with --json the last line of stdout is one JSON object."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.console import (
    candidates_json,
    emit_json,
    prepare_flows,
    print_candidates,
    print_leaderboard,
    print_predictions,
    print_scores,
    print_sweep,
    print_training,
    print_validation,
    run_summary,
    user_errors,
)
from tasks.config.load import Schema, load_config
from tasks.config.pipeline import PipelineConfig, SweepPipelineConfig
from tasks.config.score import ScoreConfig
from tasks.core.errors import ConfigError

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


def resolve_config(
    schema: type[Schema],
    config: Path | None,
    overrides: list[str] | None,
    data: str | None = None,
    test_data: str | None = None,
    text_columns: list[str] | None = None,
    label_column: str | None = None,
) -> Schema:
    """The config (a training run's or a sweep's schema) from defaults, --config, the shortcut
    options, then --set."""

    shortcuts = []
    if data is not None:
        shortcuts.append(f"data.path={json.dumps(data)}")
    if test_data is not None:
        shortcuts.append(f"data.test_path={json.dumps(test_data)}")
    if text_columns:
        shortcuts.append(f"data.text_columns={json.dumps(text_columns)}")
    if label_column is not None:
        shortcuts.append(f"data.label_column={json.dumps(label_column)}")
    return load_config(config, shortcuts + list(overrides or []), schema)


def prepare_run(schema: type[Schema], config: Path | None, overrides: list[str] | None, *shortcuts: Any) -> Schema:
    """The run's config, read before any flow starts (bad values cost nothing), and a quiet console."""

    pipeline = resolve_config(schema, config, overrides, *shortcuts)
    from tasks.data.load import check_sources

    check_sources(pipeline.data)  # a missing file fails in a second, before any server starts
    from prefect.settings import PREFECT_API_URL

    if pipeline.promotion.mode == "approval" and not PREFECT_API_URL.value():
        raise ConfigError(
            "promotion.mode=approval pauses the run until someone answers its form in the Prefect UI, and this "
            "run has no Prefect server (PREFECT_API_URL is unset): start one (make up; eval $(make -s env)), or "
            "use promotion.mode=auto or never."
        )
    prepare_flows()
    return pipeline


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
        pipeline = prepare_run(PipelineConfig, config, set_, data, test_data, text_column, label_column)
        from flows.validate import validate_data

        report = validate_data(config=pipeline)
    if as_json:
        emit_json({"status": "passed", **report.model_dump(mode="json")})
    else:
        print_validation(report)


@app.command()
def run(
    data: DataOption = None,
    test_data: TestDataOption = None,
    text_column: TextOption = None,
    label_column: LabelOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Start a new run even when an unfinished run of the same settings and data (its process died) "
            "could be continued from its last checkpoint.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run the pipeline: validate, split, fine-tune, evaluate and log to MLflow.

    An unfinished run of the same settings and data continues (its folder, MLflow run and checkpoint)."""
    with user_errors(
        on_interrupt="Run the same command again to continue from the last checkpoint (--fresh starts over)."
    ):
        pipeline = prepare_run(PipelineConfig, config, set_, data, test_data, text_column, label_column)
        from flows.train import train

        result = train(config=pipeline, fresh=fresh)
    if as_json:
        emit_json(run_summary(result))
    else:
        print_training(result)


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
        from tasks.data.load import read_texts

        texts = read_texts(text, input_file)
        from tasks.model.predict import MLFLOW_SCHEMES, load_classifier, predict_texts

        folder: str | Path = model
        if model.startswith(MLFLOW_SCHEMES):  # a folder needs neither MLflow nor Prefect (seconds of imports)
            from tasks.registry.fetch import fetch_model

            folder = fetch_model(model)
        results = predict_texts(load_classifier(folder), texts, batch_size)
    if as_json:
        emit_json({"model": model, "predictions": [{"text": t, **r} for t, r in zip(texts, results, strict=True)]})
    else:
        print_predictions(texts, results)


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
    continue_: Annotated[
        str | None,
        typer.Option(
            "--continue",
            help="Continue this sweep (its id) with its stored config; --max-rounds/--max-trials/--max-hours "
            "then extend its stored budget (recorded).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Tune hyperparameters in rounds (Optuna, pruning) until validation F1 reaches the target."""
    if continue_:
        others: dict[str, Any] = {
            "--data": data,
            "--test-data": test_data,
            "--text-column": text_column,
            "--label-column": label_column,
        }
        others |= {"--config": config, "--set": set_, "--target-f1": target_f1, "--metric": metric}
        others |= {"--trials-per-round": trials_per_round}
        with user_errors():
            given = [name for name, value in others.items() if value]
            if given:
                raise ConfigError(
                    f"--continue runs the sweep with the config it started with; {', '.join(given)} cannot change "
                    "it (only --max-rounds, --max-trials and --max-hours extend its budget). Start a new sweep instead."
                )
            from tasks.sweep.record import continue_sweep

            limits = {"max_rounds": max_rounds, "max_trials": max_trials, "max_hours": max_hours}
            pipeline, next_round = continue_sweep(continue_, limits)
            prepare_flows()
        return finish_sweep_command(pipeline, as_json, continue_, next_round)
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
        pipeline = prepare_run(
            SweepPipelineConfig, config, overrides + list(set_ or []), data, test_data, text_column, label_column
        )
    finish_sweep_command(pipeline, as_json)


def finish_sweep_command(
    pipeline: SweepPipelineConfig, as_json: bool, sweep_id: str | None = None, round_number: int = 1
) -> None:
    """Run the sweep flow (a new sweep, or `sweep_id` from `round_number`) and report it; exit 5
    when the budget ran out before the target, with or without --json."""
    hint = "Continue it with `tuneloop sweep --continue <sweep id>` (the id is in the log above): its trials resume."
    with user_errors(on_interrupt=hint):
        from flows.sweep import sweep as sweep_flow
        from tasks.sweep.state import SweepResult

        result = sweep_flow(config=pipeline, sweep_id=sweep_id, round_number=round_number)
        # the flow's final state carries the SweepResult; called directly, the flow returns that result
        assert isinstance(result, SweepResult)
    if as_json:
        emit_json({"status": result.outcome, **result.model_dump(mode="json")})
    else:
        print_sweep(result)
    if result.outcome in ("budget_spent", "already_claimed"):
        raise typer.Exit(5 if result.outcome == "budget_spent" else 6)


@app.command()
def score(
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="models:/<name>@<alias> (default: the champion), models:/<name>/<n>, a folder."
        ),
    ] = None,
    data: DataOption = None,
    text_column: TextOption = None,
    id_column: Annotated[str | None, typer.Option("--id-column", help="Column with the row id.")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="A .parquet or .csv file to write.")] = None,
    low_confidence: Annotated[float | None, typer.Option(min=0, max=1, help="Count scores below this.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Label a file of texts with a registered model; write label, score and model version per row."""
    options = {"model": model, "output": output, "low_confidence": low_confidence}
    columns = {"path": data, "text_columns": text_column or None, "id_column": id_column}
    with user_errors():
        config = score_config(
            {**{k: v for k, v in options.items() if v is not None}, "data": {k: v for k, v in columns.items() if v}}
        )
        from tasks.data.load import check_sources

        check_sources(config.data, labelled=False)  # a missing file or column fails before any server starts
        prepare_flows()
        from flows.score import score as score_flow

        report = score_flow(config=config)
    if as_json:
        emit_json({"status": "completed", **report.model_dump(mode="json")})
    else:
        print_scores(report)


def score_config(raw: dict[str, Any]) -> ScoreConfig:
    """The scoring config from the command's options, or one ConfigError naming the bad value."""
    from pydantic import ValidationError

    from tasks.config.load import describe_errors

    try:
        return ScoreConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(describe_errors(error)) from None


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
        pipeline = resolve_config(PipelineConfig, config, overrides + list(set_ or []))
        from tasks.model.select import ESTIMATED_LENGTH, screen_all, selection_table

        train = pipeline.train
        length = train.max_length or ESTIMATED_LENGTH
        reports = screen_all(pipeline.model, train.method, train.batch_size, length, train.lora_r)
    if as_json:
        emit_json(candidates_json(reports))
    else:
        print_candidates(selection_table(reports, chosen=""), train.method)


NameOption = Annotated[
    str | None, typer.Option("--name", help="Registered model name (default: promotion.model_name of the config).")
]


def registry_target(config: Path | None, set_: list[str] | None, name: str | None) -> tuple[str, str]:
    """The tracking store (which is also the registry) and the registered model's name."""
    from tasks.tracking.store import configure_tracking

    return configure_tracking(), name or resolve_config(PipelineConfig, config, set_).promotion.model_name


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
        from tasks.registry.versions import promote_version, registry_errors

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
        from tasks.registry.versions import registry_errors
        from tasks.registry.versions import rollback as roll_back

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

    with user_errors():
        if metric not in ("f1_macro", "f1_weighted", "accuracy"):
            raise ConfigError(f"--metric {metric!r} is not one of f1_macro, f1_weighted, accuracy.")
        if experiment is None and sweep_id is None:
            experiment = resolve_config(PipelineConfig, config, set_).tracking.experiment
        from tasks.tracking.leaderboard import leaderboard, read_runs
        from tasks.tracking.store import configure_tracking

        rows = leaderboard(read_runs(configure_tracking(), experiment, sweep_id), metric, top)
    if as_json:
        emit_json(
            {"metric": metric, "experiment": experiment, "sweep_id": sweep_id, "runs": [r.model_dump() for r in rows]}
        )
    else:
        print_leaderboard(rows, experiment, sweep_id)


@app.command("config")
def show_config(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Print the effective configuration as YAML (defaults, --config, then --set), sweep section included."""
    import yaml

    with user_errors():
        pipeline = resolve_config(SweepPipelineConfig, config, set_)
    typer.echo(yaml.safe_dump(pipeline.model_dump(mode="json"), sort_keys=False).rstrip())


def main() -> None:
    """Console entry point: the environment first (and the running local stack, if any), before anything
    imports Prefect or MLflow."""
    from tasks.core.errors import TuneloopError
    from tasks.core.home import configure_environment
    from tasks.core.stack import use_running_stack

    try:
        configure_environment()
        stack = use_running_stack()  # CLI and UI runs share one registry while `make up` runs
    except TuneloopError as error:  # an unusable home folder: one message, before anything else
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    if stack:
        typer.echo(stack, err=True)
    sys.exit(app())


if __name__ == "__main__":
    main()
