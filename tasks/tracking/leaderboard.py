"""The leaderboard behind `tuneloop compare` and the sweep report: training runs and sweep trials
read back from MLflow, best validation score first."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from tasks.core.errors import TrackingError, first_line
from tasks.tracking.store import absent_store, damaged_store, masked_url, mlflow_client

KEY_PARAMS = (
    "train.method",
    "train.learning_rate",
    "train.epochs",
    "train.batch_size",
    "train.weight_decay",
    "train.warmup_epochs",
    "train.lora_r",
)


LISTED_KINDS = (None, "training", "trial")


class LeaderboardRow(BaseModel):
    """One run on the leaderboard."""

    rank: int
    run_id: str
    run_name: str
    kind: str
    sweep_id: str | None
    round: int | None
    trial: int | None
    pruned: bool
    best_val: float | None
    test: float | None
    duration_s: float | None
    base_model: str | None
    params: dict[str, str]


def read_runs(tracking_uri: str, experiment: str | None, sweep_id: str | None) -> list[Any]:
    """Training runs and sweep trials of an experiment (or of every experiment, for one sweep)."""
    absent = absent_store(tracking_uri, "is tracked")
    if absent:
        raise TrackingError(absent)
    try:
        client = mlflow_client(tracking_uri)
        if experiment:
            found = client.get_experiment_by_name(experiment)
            if found is None:
                names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
                raise TrackingError(
                    f"No MLflow experiment named {experiment!r} in {masked_url(tracking_uri)} (experiments: {names}). "
                    "Pass --experiment with one of them."
                )
            ids = [found.experiment_id]
        else:
            ids = [e.experiment_id for e in client.search_experiments()]
        query = f"tags.sweep_id = '{sweep_id}' and tags.kind = 'trial'" if sweep_id else ""
        runs = client.search_runs(ids, query, max_results=5000) if ids else []
    except TrackingError:
        raise
    except Exception as error:
        fix = damaged_store(tracking_uri, error) or "Start the server (make up) or fix MLFLOW_TRACKING_URI."
        raise TrackingError(
            f"Cannot read runs from MLflow at {masked_url(tracking_uri)}: {first_line(error)}. {fix}"
        ) from None
    return [run for run in runs if run.data.tags.get("kind") in LISTED_KINDS]


def applicable_params(params: dict[str, str]) -> dict[str, str]:
    """The key parameters of a run that apply to it: LoRA's only when it trained LoRA adapters."""
    lora = params.get("train.method") == "lora"
    return {key: params[key] for key in KEY_PARAMS if key in params and (lora or not key.startswith("train.lora_"))}


def shown_value(value: str) -> str:
    """A parameter as people read it: numbers to 3 significant digits (7.9e-05, 0.0123), the rest as is."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() and "e" not in value.lower() else f"{number:.3g}"


def shown_params(params: dict[str, str]) -> str:
    """`method=full learning_rate=7.9e-05 ...`: the parameters of a leaderboard row, rounded."""
    return " ".join(f"{key.removeprefix('train.')}={shown_value(value)}" for key, value in params.items())


def leaderboard(runs: list[Any], metric: str = "f1_macro", top: int = 10) -> list[LeaderboardRow]:
    """Runs ordered by best validation `metric` (runs without one last), then test score, then age."""

    def number(value: str | None) -> int | None:
        return int(value) if value and value.isdigit() else None

    rows = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        ended = run.info.end_time
        rows.append(
            LeaderboardRow(
                rank=0,
                run_id=run.info.run_id,
                run_name=run.info.run_name or "",
                kind=tags.get("kind", "training"),
                sweep_id=tags.get("sweep_id"),
                round=number(tags.get("round")),
                trial=number(tags.get("trial_number")),
                pruned=tags.get("pruned") == "True",
                best_val=metrics.get(f"best/{metric}"),
                test=metrics.get(f"test/{metric}"),
                duration_s=round((ended - run.info.start_time) / 1000, 1) if ended else None,
                base_model=tags.get("base_model"),
                params=applicable_params(run.data.params),
            )
        )
    rows.sort(
        key=lambda row: (
            row.best_val is None,
            -(row.best_val or 0.0),
            -(row.test if row.test is not None else -1.0),
            row.run_id,
        )
    )
    return [row.model_copy(update={"rank": index}) for index, row in enumerate(rows[:top], start=1)]


def leaderboard_markdown(rows: list[LeaderboardRow], metric: str) -> str:
    """The leaderboard as a Markdown table."""
    head = f"| # | run | kind | round | trial | pruned | best val {metric} | test {metric} | seconds | parameters |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        shown = shown_params(row.params)
        lines.append(
            f"| {row.rank} | {row.run_name} | {row.kind} | {row.round or ''} | "
            f"{'' if row.trial is None else row.trial} | {'yes' if row.pruned else ''} | "
            f"{'' if row.best_val is None else f'{row.best_val:.4f}'} | "
            f"{'' if row.test is None else f'{row.test:.4f}'} | {row.duration_s or ''} | {shown} |"
        )
    return "\n".join(lines)
