"""What the `tuneloop` command prints: one line per user error (no traceback), the results of each
command in words, and with --json one JSON object on the last line of stdout."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from tasks.core.disk import disk_full, says_disk_full
from tasks.core.errors import DiskSpaceError, first_line
from tasks.core.secrets import mask_credentials

if TYPE_CHECKING:
    from flows.train import TrainResult
    from tasks.data.validate import DataReport
    from tasks.model.score import ScoreReport
    from tasks.model.select import CandidateReport
    from tasks.sweep.state import SweepResult
    from tasks.tracking.leaderboard import LeaderboardRow


@functools.cache
def error_names() -> tuple[str, ...]:
    """The names of tuneloop's own error classes (computed once: the log filter asks per record)."""
    from tasks.core import errors

    return tuple(name for name, value in vars(errors).items() if isinstance(value, type) and name.endswith("Error"))


def known_error_name(message: str) -> bool:
    """Whether a Prefect state message names one of tuneloop's own errors (`DataLoadError: ...`)."""
    return any(f"{name}: " in message or f"{name}(" in message for name in error_names())


class HideKnownTracebacks(logging.Filter):
    """Prefect logs a failed task's traceback and state; for errors that are the user's to fix (ours,
    and a full disk), the one-line message the command prints is enough on the console (the Prefect
    UI keeps the full record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tasks.core.errors import TuneloopError

        # The message itself is printed once by the command; drop the records that repeat it: the
        # traceback, and the task's and flow's "Finished in state Failed(... <OurError>: ...)" lines.
        if record.exc_info and (isinstance(record.exc_info[1], TuneloopError) or disk_full(record.exc_info[1])):
            return False
        message = record.getMessage()
        if says_disk_full(message):  # any library's words (and traceback) for it: the command says it once
            return False
        return not (message.startswith("Finished in state Failed(") and known_error_name(message))


def quiet_known_tracebacks() -> None:
    """Set up Prefect's console logging now (it would on the first flow run) and install
    HideKnownTracebacks on its handlers."""
    from prefect.logging.configuration import ensure_logging_setup

    from tasks.core.secrets import mask_logs

    ensure_logging_setup()
    mask_logs()

    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(HideKnownTracebacks())


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C: the command ends with its one line, not silently killed."""

    signal = 15  # SIGTERM, which a finalizer that swallowed this exception delivers again (tasks.core.signals)


# An interrupted command (SIGTERM, Ctrl-C) exits within this many seconds, even when a library's
# shutdown hangs (a trial process killed while it held a queue's lock can leave Python's process
# pool or Prefect waiting on it for good). Kubernetes' default grace before its SIGKILL is 30 s too.
SHUTDOWN_GRACE_SECONDS = 30.0


class Shutdown:
    """Once the command was interrupted: whether its one line was printed, and whether the watchdog
    that ends a hanging shutdown runs."""

    said = False
    watched = False


def raise_terminated(signum: int, frame: Any) -> None:
    watch_shutdown(143)
    raise Terminated()


def watch_shutdown(code: int) -> None:
    """End the command with `code` SHUTDOWN_GRACE_SECONDS from now unless it ended by itself."""
    if not Shutdown.watched:
        Shutdown.watched = True
        threading.Thread(target=end_hanging_shutdown, args=(code,), name="tuneloop-shutdown", daemon=True).start()


def end_hanging_shutdown(code: int) -> None:
    """The watchdog: after the grace period, write where each thread waits to a file for a bug
    report, say so in one line (and the interrupted line when it was not printed yet) and exit at
    once. Written with os.write: a thread that hangs may hold sys.stderr's lock. What the shutdown
    did not finish is what kill -9 leaves too, and tuneloop takes that over: the temporary Prefect
    server and trial processes end with the command, stale trials fail by their heartbeats."""
    import faulthandler
    import tempfile

    time.sleep(SHUTDOWN_GRACE_SECONDS)
    where = os.path.join(tempfile.gettempdir(), f"tuneloop-shutdown-{os.getpid()}.txt")
    try:
        with open(where, "w") as report:
            faulthandler.dump_traceback(report, all_threads=True)
    except OSError:
        where = "not written"
    said = "" if Shutdown.said else "error: interrupted.\n"
    waited = f"shutting down took over {SHUTDOWN_GRACE_SECONDS:g} s; stopped without waiting (threads: {where})"
    os.write(2, f"{said}warning: {waited}.\n".encode())
    os._exit(code)


def prepare_flows() -> None:
    """Before a command runs a flow: quiet Prefect's console for our own errors; SIGTERM ends the
    command like Ctrl-C (Prefect marks the flow run crashed, then passes the signal on to this
    handler), also when it lands in a finalizer (keep_lost_signals); and Prefect's temporary server
    (when no PREFECT_API_URL is set) is tied to this command, so it ends with it, even on kill -9."""
    import signal

    from tasks.core.prefect_server import start_temporary_server
    from tasks.core.signals import keep_lost_signals

    quiet_known_tracebacks()
    keep_lost_signals()
    signal.signal(signal.SIGTERM, raise_terminated)
    start_temporary_server()


def terminated(error: BaseException) -> bool:
    """Whether `error` is Prefect's TerminationSignal (SIGTERM during a flow run); Prefect is only
    imported when a command ran a flow, and only then can it be."""
    exceptions = sys.modules.get("prefect.exceptions")
    return exceptions is not None and isinstance(error, exceptions.TerminationSignal)


@contextmanager
def user_errors(on_interrupt: str = "") -> Iterator[None]:
    """Turn TuneloopError into one message on stderr and its exit code; an interrupt (Ctrl-C,
    SIGTERM) into one line, with `on_interrupt` saying how to go on."""
    from tasks.core.errors import TuneloopError

    try:
        yield
    except TuneloopError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    except BaseException as error:
        if disk_full(error):  # anywhere: the data gate's docs, a checkpoint, the saved model, MLflow's copy
            typer.echo(
                f"error: the disk is full ({first_line(error)}). Free some space (or point TUNELOOP_HOME at a "
                "disk with more room) and run the same command again: a training continues from its last "
                "checkpoint.",
                err=True,
            )
            raise typer.Exit(DiskSpaceError.exit_code) from None
        if not (isinstance(error, KeyboardInterrupt) or terminated(error)):
            raise
        code = 143 if isinstance(error, Terminated) or terminated(error) else 130
        watch_shutdown(code)
        typer.echo(f"error: interrupted.{' ' + on_interrupt if on_interrupt else ''}", err=True)
        Shutdown.said = True
        raise typer.Exit(code) from None


def emit_json(payload: dict[str, Any]) -> None:
    """One JSON object on the last line of stdout, URL passwords masked as everywhere else."""
    typer.echo(mask_credentials(json.dumps(payload, default=str)))


def print_validation(report: DataReport) -> None:
    """The data gate's verdict for the data and the separate test set."""
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


def run_summary(result: TrainResult) -> dict[str, Any]:
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
        "plan": {
            **result.model.plan.model_dump(),
            "train_rows": result.splits.train.rows,
            "validation_rows": result.splits.validation.rows,
            "refit": result.model.refit.model_dump(),
        },
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
        "family": result.family.model_dump(mode="json") if result.family else None,
        "promotion": result.promotion.model_dump(mode="json") if result.promotion else None,
    }


def print_training(result: TrainResult) -> None:
    """A training run's scores, the baseline's, the verdict and where everything is."""
    summary = run_summary(result)
    test, val = summary["metrics"]["test"], summary["metrics"]["val"]
    how = f"{summary['method']}, {summary['device']}, {summary['precision']}"
    typer.echo(
        f"Fine-tuned {summary['base_model']} ({how}), best epoch {summary['best_epoch']} of {summary['epochs']} "
        f"({summary['train_seconds']:.0f} s)."
    )
    typer.echo(f"  {result.model.refit.sentence()}")
    typer.echo(f"  validation: accuracy {val['accuracy']:.4f}, f1_macro {val['f1_macro']:.4f}")
    typer.echo(
        f"  test:       accuracy {test['accuracy']:.4f}, f1_macro {test['f1_macro']:.4f}, "
        f"f1_weighted {test['f1_weighted']:.4f}"
    )
    baseline = summary["baseline"]["test"]
    typer.echo(f"  baseline:   {summary['baseline']['name']} test f1_macro {baseline['f1_macro']:.4f}")
    typer.echo(f"  {summary['verdict']}")
    if result.family:
        typer.echo(f"  family:     {result.family.reason}")
    typer.echo(f"  model:      {summary['model_path']}")
    typer.echo(f"  run folder: {summary['run_folder']}")
    typer.echo(f"  MLflow:     run {summary['run_id']} in experiment '{summary['experiment']}'")
    typer.echo(f"  open it:    {result.tracking.link}")
    if result.promotion:
        typer.echo(f"  registry:   {result.promotion.message}")


def print_predictions(texts: list[str], results: list[dict[str, Any]]) -> None:
    """One line per text: label, its probability, the text (shortened)."""
    for line, result in zip(texts, results, strict=True):
        shown = line if len(line) <= 60 else line[:57] + "..."
        typer.echo(f"{result['label']}\t{result['probabilities'][result['label']]:.3f}\t{shown}")


def print_scores(report: ScoreReport) -> None:
    """How many texts got each label, how many scored low, and where the predictions are."""
    typer.echo(f"Scored {report.rows} texts of {report.source} with {report.model} (version {report.model_version}).")
    for label, count in report.labels.items():
        typer.echo(f"  {label:<20} {count:>7}  {count / report.rows:6.1%}")
    typer.echo(f"  below score {report.threshold:g}: {report.low_confidence}")
    typer.echo(f"  predictions: {report.output}")


def print_sweep(result: SweepResult) -> None:
    """How the sweep (or this round) ended, its best trial and the registry's decision."""
    typer.echo(result.message)
    typer.echo(f"  sweep {result.sweep_id}: {result.rounds} round(s), {result.trials} trials ({result.pruned} pruned)")
    if result.searched:
        typer.echo(f"  searched: {'; '.join(result.searched)}")
    if result.best_model_path:
        typer.echo(f"  best trial {result.best_trial}: {result.best_score:.4f}, model {result.best_model_path}")
    if result.refit is not None:
        typer.echo(f"  {result.refit.sentence()}")
    if result.best_test is not None:
        typer.echo(f"  best trial's test {result.best_test.get('f1_macro', float('nan')):.4f} f1_macro")
    if result.family and result.family.difference is not None:
        typer.echo(f"  family: {result.family.reason}")
    typer.echo(f"  MLflow parent run: {result.parent_run_id}")
    if result.promotion:
        typer.echo(f"  registry: {result.promotion.message}")


def print_candidates(rows: list[dict[str, Any]], method: str) -> None:
    """Each screened candidate: accepted or rejected, license, architecture, size, memory, reasons."""
    for row in rows:
        status = "ok      " if row["accepted"] else "rejected"
        size = f"{row['parameters'] / 1e6:.1f}M params" if row["parameters"] else "size unknown"
        memory = f"~{row[f'memory_gb_{method}']} GB ({method})" if row["memory_gb_full"] else ""
        typer.echo(
            f"{status} {row['candidate']}  license {row['license']}, {row['architecture'] or '?'}, {size} {memory}"
        )
        if not row["accepted"]:
            typer.echo(f"         {row['reasons']}")


def candidates_json(reports: list[CandidateReport]) -> dict[str, Any]:
    """The screened candidates as printed with --json."""
    return {"candidates": [report.model_dump() for report in reports]}


def print_leaderboard(rows: list[LeaderboardRow], experiment: str | None, sweep_id: str | None) -> None:
    """The leaderboard as a table, best validation score first, numbers rounded."""
    from tasks.tracking.leaderboard import shown_params

    if not rows:
        typer.echo("No runs found." + ("" if sweep_id else f" Experiment: {experiment}."))
        return
    typer.echo(f"{'#':>3}  {'best val':>8}  {'test':>6}  {'kind':<8} {'round':>5} {'trial':>5}  run / parameters")
    for row in rows:
        best = "" if row.best_val is None else f"{row.best_val:.4f}"
        test = "" if row.test is None else f"{row.test:.4f}"
        params = shown_params(row.params)
        typer.echo(
            f"{row.rank:>3}  {best:>8}  {test:>6}  {row.kind:<8} {row.round or '':>5} "
            f"{'' if row.trial is None else row.trial:>5}  {row.run_name}{' (pruned)' if row.pruned else ''}  {params}"
        )
