"""The sweep's pictures and comparison report: score by trial and by parameter, per-class F1, the
confusion matrices and the leaderboard, on the sweep's MLflow parent run and linked from Prefect."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import task

from tasks.config.pipeline import SweepPipelineConfig
from tasks.core.plots import pyplot, save_figure
from tasks.registry.versions import PromotionResult
from tasks.sweep.state import BestModel, SweepState, TrialResult
from tasks.tracking.leaderboard import LeaderboardRow, leaderboard, leaderboard_markdown, read_runs, shown_params
from tasks.tracking.store import TrackingTarget, mlflow_client


def plot_parameters(trials: list[TrialResult], searched: Sequence[str], metric: str, path: Path) -> Path | None:
    """Validation score against each searched hyperparameter, one panel each, coloured by round."""
    plt = pyplot()

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
            from matplotlib.ticker import LogFormatterSciNotation, LogLocator

            axis.set_xscale("log")
            axis.xaxis.set_major_locator(LogLocator(numticks=4))
            axis.xaxis.set_major_formatter(LogFormatterSciNotation())
            axis.xaxis.set_minor_formatter(plt.NullFormatter())
        axis.set_xlabel(name)
        axis.set_ylabel(f"validation {metric}")
    figure.suptitle("Score by hyperparameter (colour: round)")
    return save_figure(figure, path, dpi=110)


def plot_per_class(scores: dict[str, dict[str, float]], path: Path) -> Path | None:
    """Grouped bars: F1 per class (x) for each compared model (colour)."""
    plt = pyplot()
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
    return save_figure(figure, path, dpi=110)


def top_trials_per_class(
    trials: list[TrialResult], validation_path: str, batch_size: int, count: int = 3
) -> dict[str, Any]:
    """Per-class validation F1 of the `count` best completed trials (their saved models predict the
    validation split again: trials log only overall scores per epoch)."""
    import pandas as pd

    from tasks.core.metrics import classification_metrics
    from tasks.model.predict import predictions

    frame = pd.read_parquet(validation_path)
    truth = frame["label"].astype(str).tolist()
    done = [t for t in trials if t.state == "complete" and t.model_path and Path(t.model_path).is_dir()]
    best = sorted(done, key=lambda trial: trial.score or 0.0, reverse=True)[:count]
    scores = {}
    for trial in best:
        predicted = predictions(str(trial.model_path), frame["text"].tolist(), batch_size)
        per_class = classification_metrics(truth, predicted, sorted(set(truth)))["per_class"]
        scores[f"trial {trial.number} (val)"] = {label: values["f1"] for label, values in per_class.items()}
    return scores


def report_pictures(
    pipeline: SweepPipelineConfig,
    state: SweepState,
    trials: list[TrialResult],
    best: BestModel | None,
    promotion: PromotionResult | None,
    folder: Path,
) -> dict[str, Path | None]:
    """The report's pictures by title: score by trial and by parameter, per-class F1 (top trials on
    validation, candidate and champion on test), and the confusion matrices."""

    config = pipeline.sweep
    per_class = top_trials_per_class(trials, state.splits.validation.path, pipeline.eval.batch_size)
    comparison = promotion.comparison if promotion else None
    if best is not None:
        per_class["candidate (test)"] = {k: v["f1"] for k, v in best.evaluation.test.per_class.items()}
    if comparison is not None and comparison.champion is not None:
        champion = comparison.champion.per_class
        per_class[f"champion v{comparison.champion_version} (test)"] = {k: v["f1"] for k, v in champion.items()}
    history = Path(state.folder) / "sweep_history.png"  # drawn after every round (close_round)
    if not history.is_file():
        plot_trials(trials, config.metric, config.target_f1, history)
    pictures: dict[str, Path | None] = {
        "Score by trial and round": history,
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
def sweep_report(
    pipeline: SweepPipelineConfig,
    state: SweepState,
    target: TrackingTarget,
    best: BestModel | None,
    promotion: PromotionResult | None,
) -> Path:
    """The sweep's comparison report: one HTML page with its pictures inline (score by trial and round,
    score against each searched parameter, per-class F1 of the top trials and of candidate and champion
    on test, the confusion matrices) and the leaderboard, logged to the parent run as `report/report.html`
    and summed up in a Prefect artifact that links to it."""
    from prefect.artifacts import create_markdown_artifact

    from tasks.sweep.record import closed_rounds, study_trials, sweep_study
    from tasks.tracking.store import run_link

    config = pipeline.sweep
    folder = Path(state.folder) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    study = sweep_study(state)
    trials = study_trials(study)
    pictures = report_pictures(pipeline, state, trials, best, promotion, folder)
    rows = leaderboard(read_runs(target.uri, target.experiment, state.sweep_id), config.metric, top=10)
    summary = [
        f"{len(closed_rounds(study))} round(s), {len(trials)} trials, "
        f"{sum(t.state == 'pruned' for t in trials)} pruned; "
        f"target {config.metric} {config.target_f1}.",
    ]
    if best is not None:
        summary.append(
            f"Best trial {best.trial.number}: validation {best.trial.score:.4f}, "
            f"test {getattr(best.evaluation.test, config.metric):.4f}."
        )
    if promotion is not None:
        summary.append(f"Registry: {promotion.message}")
    title, table = f"Sweep {state.sweep_id}", leaderboard_markdown(rows, config.metric)
    report = folder / "report.html"
    report.write_text(report_html(title, summary, rows, config.metric, pictures), "utf-8")
    # One file with its pictures inside (MLflow's artifact viewer shows HTML, not linked images);
    # the pictures drawn for the report sit beside it, the others stay where they were logged.
    mlflow_client(target.uri).log_artifacts(state.parent_run_id, str(folder), "report")
    link = run_link(target, state.parent_run_id)
    create_markdown_artifact(
        key="sweep-report",
        description=f"Comparison report of {state.sweep_id}",
        markdown="\n".join(
            [
                f"# {title}",
                "",
                *summary,
                "",
                table,
                "",
                f"Report and plots: artifact `report/` of the sweep's MLflow run: {link}",
            ]
        ),
    )
    return report


def report_html(
    title: str, summary: list[str], rows: list[LeaderboardRow], metric: str, pictures: dict[str, Path | None]
) -> str:
    """A self-contained HTML page: the summary, the leaderboard table and each picture as a data URI."""
    import base64
    from html import escape

    head = ["#", "run", "kind", "round", "trial", "pruned", f"best val {metric}", f"test {metric}", "parameters"]
    body = [
        [
            str(row.rank),
            row.run_name,
            row.kind,
            str(row.round or ""),
            "" if row.trial is None else str(row.trial),
            "yes" if row.pruned else "",
            "" if row.best_val is None else f"{row.best_val:.4f}",
            "" if row.test is None else f"{row.test:.4f}",
            shown_params(row.params),
        ]
        for row in rows
    ]
    table = "<table><tr>" + "".join(f"<th>{escape(cell)}</th>" for cell in head) + "</tr>"
    table += "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in line) + "</tr>" for line in body)
    parts = [f"<h1>{escape(title)}</h1>", *(f"<p>{escape(line)}</p>" for line in summary if line)]
    parts += ["<h2>Leaderboard</h2>", "<div style='overflow-x:auto'>" + table + "</table></div>"]
    for name, path in pictures.items():
        if path is not None and Path(path).is_file():
            data = base64.b64encode(Path(path).read_bytes()).decode()
            parts += [f"<h2>{escape(name)}</h2>", f'<img alt="{escape(name)}" src="data:image/png;base64,{data}">']
    style = (
        "body{font-family:sans-serif;margin:1.5em;max-width:1100px}img{max-width:100%}"
        "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:3px 6px}"
    )
    page = f"<head><meta charset='utf-8'><style>{style}</style></head><body>{''.join(parts)}</body>"
    return f"<!doctype html><html>{page}</html>"


def plot_trials(trials: list[TrialResult], metric: str, target_f1: float, path: Path) -> Path:
    """Validation score by trial, coloured by round; pruned trials as crosses; the target as a line."""
    plt = pyplot()

    figure, axes = plt.subplots(figsize=(7, 4))
    rounds = sorted({trial.round for trial in trials})
    colours = plt.get_cmap("viridis")([index / max(len(rounds) - 1, 1) for index in range(len(rounds))])
    for colour, round_number in zip(colours, rounds, strict=True):
        for state, marker in (("complete", "o"), ("pruned", "x")):
            points = [(t.number, t.score) for t in trials if t.round == round_number and t.state == state and t.score]
            if points:
                axes.scatter(
                    *zip(*points, strict=True),
                    color=colour,
                    marker=marker,
                    label=f"round {round_number}" + (" (pruned)" if state == "pruned" else ""),
                )
    axes.axhline(target_f1, color="red", linestyle="--", linewidth=1, label=f"target {target_f1}")
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers, not 0.2 steps
    axes.set_xlabel("trial")
    axes.set_ylabel(f"validation {metric}")
    axes.set_title("Sweep history")
    axes.legend(fontsize=8, loc="best")  # not over the low scores of a first round
    return save_figure(figure, path)
