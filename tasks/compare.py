"""Comparing runs: the leaderboard behind `tuneloop compare` (read back from MLflow), and the
sweep's comparison report (pictures and Markdown on the sweep's parent run, linked from Prefect)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from pydantic import BaseModel

from tasks.errors import TrackingError, first_line

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
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    try:
        if experiment:
            found = client.get_experiment_by_name(experiment)
            if found is None:
                names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
                raise TrackingError(
                    f"No MLflow experiment named {experiment!r} in {tracking_uri} (experiments: {names}). "
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
        raise TrackingError(
            f"Cannot read runs from MLflow at {tracking_uri}: {first_line(error)}. Start the server (make up) or "
            "fix MLFLOW_TRACKING_URI."
        ) from None
    return [run for run in runs if run.data.tags.get("kind") in LISTED_KINDS]


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
                params={key: run.data.params[key] for key in KEY_PARAMS if key in run.data.params},
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
        shown = ", ".join(f"{key.removeprefix('train.')}={value}" for key, value in row.params.items())
        lines.append(
            f"| {row.rank} | {row.run_name} | {row.kind} | {row.round or ''} | "
            f"{'' if row.trial is None else row.trial} | {'yes' if row.pruned else ''} | "
            f"{'' if row.best_val is None else f'{row.best_val:.4f}'} | "
            f"{'' if row.test is None else f'{row.test:.4f}'} | {row.duration_s or ''} | {shown} |"
        )
    return "\n".join(lines)


# The sweep's report.


def plot_parameters(trials: list[Any], searched: list[str], metric: str, path: Path) -> Path | None:
    """Validation score against each searched hyperparameter, one panel each, coloured by round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name in searched if any(name in trial.params for trial in trials)]
    scored = [trial for trial in trials if trial.score is not None]
    if not names or not scored:
        return None
    figure, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    rounds = [trial.round for trial in scored]
    for axis, name in zip(axes[0], names, strict=True):
        points = [(trial.params[name], trial.score, trial.round) for trial in scored if name in trial.params]
        values = [str(x) if isinstance(x, str) else x for x, _, _ in points]
        axis.scatter(
            values,
            [y for _, y, _ in points],
            c=[r for _, _, r in points],
            cmap="viridis",
            vmin=min(rounds),
            vmax=max(max(rounds), min(rounds) + 1),
        )
        if name == "learning_rate":
            axis.set_xscale("log")
        axis.set_xlabel(name)
        axis.set_ylabel(f"validation {metric}")
    figure.suptitle("Score by hyperparameter (colour: round)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_per_class(scores: dict[str, dict[str, float]], path: Path) -> Path | None:
    """Grouped bars: F1 per class (x) for each compared model (colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not scores:
        return None
    labels = sorted({label for per_class in scores.values() for label in per_class})
    width = 0.8 / len(scores)
    figure, axis = plt.subplots(figsize=(max(5, 1.2 * len(labels) + 2), 3.6))
    for index, (name, per_class) in enumerate(scores.items()):
        offsets = np.arange(len(labels)) + index * width - 0.4 + width / 2
        axis.bar(offsets, [per_class.get(label, 0.0) for label in labels], width, label=name)
    axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("F1")
    axis.set_title("F1 per class")
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def top_trials_per_class(trials: list[Any], validation_path: str, batch_size: int, count: int = 3) -> dict[str, Any]:
    """Per-class validation F1 of the `count` best completed trials (their saved models predict the
    validation split again: trials log only overall scores per epoch)."""
    import pandas as pd

    from tasks.evaluate import classification_metrics
    from tasks.predict import predictions

    frame = pd.read_parquet(validation_path)
    truth = frame["label"].astype(str).tolist()
    done = [t for t in trials if t.state == "complete" and t.model_path and Path(t.model_path).is_dir()]
    best = sorted(done, key=lambda trial: trial.score or 0.0, reverse=True)[:count]
    scores = {}
    for trial in best:
        predicted = predictions(trial.model_path, frame["text"].tolist(), batch_size)
        per_class = classification_metrics(truth, predicted, sorted(set(truth)))["per_class"]
        scores[f"trial {trial.number} (val)"] = {label: values["f1"] for label, values in per_class.items()}
    return scores


def report_pictures(
    pipeline: BaseModel, state: Any, trials: list[Any], best: Any, promotion: Any, folder: Path
) -> dict[str, Path | None]:
    """The report's pictures by title: score by trial and by parameter, per-class F1 (top trials on
    validation, candidate and champion on test), and the confusion matrices."""
    from tasks.rounds import plot_trials

    config = pipeline.sweep  # type: ignore[attr-defined]
    per_class = top_trials_per_class(trials, state.splits.validation.path, pipeline.eval.batch_size)  # type: ignore[attr-defined]
    comparison = promotion.comparison if promotion else None
    if best is not None:
        per_class["candidate (test)"] = {k: v["f1"] for k, v in best.evaluation.test.per_class.items()}
    if comparison is not None and comparison.champion is not None:
        champion = comparison.champion.per_class
        per_class[f"champion v{comparison.champion_version} (test)"] = {k: v["f1"] for k, v in champion.items()}
    pictures = {
        "Score by trial and round": plot_trials(trials, config.metric, config.target_f1, folder / "trials.png"),
        "Score by hyperparameter": plot_parameters(trials, config.search, config.metric, folder / "parameters.png"),
        "F1 per class": plot_per_class(per_class, folder / "per_class.png"),
    }
    pair = Path(state.folder) / "promotion" / "confusion_candidate_champion.png"
    if pair.is_file():
        pictures["Confusion matrices: candidate and champion"] = pair
    elif best is not None:
        pictures["Confusion matrix of the best trial"] = Path(best.evaluation.confusion_matrix_path)
    return pictures


@task(name="sweep_report")
def sweep_report(pipeline: BaseModel, state: Any, target: Any, best: Any, promotion: Any) -> Path:
    """The sweep's comparison report: Markdown with PNG plots (score by trial and round, score against
    each searched parameter, per-class F1 of the top trials and of candidate and champion on test,
    the two confusion matrices), logged to the parent run under `report/` and linked from Prefect."""
    import mlflow
    from prefect.artifacts import create_markdown_artifact

    from tasks.rounds import all_trials
    from tasks.track import run_link

    config = pipeline.sweep  # type: ignore[attr-defined]
    folder = Path(state.folder) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    trials = all_trials(state)
    pictures = report_pictures(pipeline, state, trials, best, promotion, folder)
    rows = leaderboard(read_runs(target.uri, target.experiment, state.sweep_id), config.metric, top=10)
    lines = [
        f"# Sweep {state.sweep_id}",
        "",
        f"{len(state.rounds)} round(s), {len(trials)} trials, {sum(t.state == 'pruned' for t in trials)} pruned; "
        f"target {config.metric} {config.target_f1}.",
    ]
    if best is not None:
        lines.append(
            f"Best trial {best.trial.number}: validation {best.trial.score:.4f}, "
            f"test {getattr(best.evaluation.test, config.metric):.4f}."
        )
    if promotion is not None:
        lines.append(f"Registry: {promotion.message}")
    summary, table = list(lines), leaderboard_markdown(rows, config.metric)
    lines += ["", "## Leaderboard", "", table, ""]
    for title, path in pictures.items():
        if path is not None:
            lines += [f"## {title}", "", f"![{title}]({Path(path).name})", ""]
    report = folder / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    client = mlflow.MlflowClient(target.uri)
    for path in pictures.values():
        if path is not None and Path(path).parent != folder:
            client.log_artifact(state.parent_run_id, str(path), "report")
    client.log_artifacts(state.parent_run_id, str(folder), "report")
    link = run_link(target, state.parent_run_id)
    create_markdown_artifact(
        key="sweep-report",
        description=f"Comparison report of {state.sweep_id}",
        markdown="\n".join(
            [*summary, "", table, "", f"Report and plots: artifact `report/` of the sweep's MLflow run: {link}"]
        ),
    )
    return report
