"""The sweep's one record: its Optuna storage. Every worker on every host that reaches the database
sees the same sweep, so nothing of it lives in a process or a file:

- the study, on an RDB storage with heartbeats: a trial whose worker died is failed once its
  heartbeat is stale, and re-queued once (Optuna's RetryHeartbeatStaleTrialCallback) so that its
  retry resumes from the dead trial's checkpoints;
- each trial's outcome in its user attributes (round, model path, history, seconds, MLflow run);
- the sweep's setup (splits, base model, MLflow parent run), its budget (fixed when the sweep
  started, changed only by an explicit, recorded extension) and each closed round's summary in
  the study's user attributes;
- the round claims in a table of the same database, `tuneloop_round_claims`, whose primary key
  (sweep, round) makes claiming atomic: of two runs claiming a round at the same moment one wins.
  The holder renews its claim while the round runs (a lease); a claim not renewed for
  LEASE_SECONDS belongs to a run that died, and the next run of that round takes it over (one
  conditional UPDATE, so again only one wins) and finishes the round. A round that fails or is
  interrupted gives its claim up at once.

Creating a SQLite storage is serialised by a file lock (tasks/core/locks.py).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from tasks.config.sweep import SweepConfig
from tasks.core.errors import SweepStorageError, first_line
from tasks.core.home import tuneloop_home
from tasks.core.locks import creation_lock, sqlite_file
from tasks.core.secrets import mask_credentials
from tasks.sweep.state import Budget, SweepState, TrialResult

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30  # a trial without a heartbeat for this long is failed (and retried once)
LEASE_SECONDS = 60  # a round claim not renewed for this long belongs to a run that died
SETUP, BUDGET, ROUND, CONFIG = "tuneloop.setup", "tuneloop.budget", "tuneloop.round.", "tuneloop.config"
CLAIMS = sa.Table(
    "tuneloop_round_claims",
    sa.MetaData(),
    sa.Column("sweep_id", sa.String(200), primary_key=True),
    sa.Column("round", sa.Integer, primary_key=True),
    sa.Column("flow_run_id", sa.String(100), nullable=False),
    sa.Column("claimed_at", sa.DateTime, nullable=False),
    sa.Column("renewed_at", sa.DateTime, nullable=False),
)
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}

CONNECT_SECONDS = 10  # how long a database server may take to accept a connection
_storages: dict[str, Any] = {}
_storages_lock = threading.Lock()


def optuna_storage(config: SweepConfig) -> str:
    """The configured storage, else TUNELOOP_OPTUNA_STORAGE (where a password may live, out of
    the form), else a SQLite file in the home folder."""
    return config.storage or os.environ.get("TUNELOOP_OPTUNA_STORAGE") or f"sqlite:///{tuneloop_home() / 'optuna.db'}"


def rdb_storage(url: str) -> Any:
    """The Optuna RDB storage at `url` with heartbeats and the claims table, one per process."""
    import optuna

    with _storages_lock:
        if url not in _storages:
            engine: dict[str, Any] = {"connect_args": {"timeout": 60}} if sqlite_file(url) else {"pool_pre_ping": True}
            if url.startswith("postgresql"):
                engine["connect_args"] = {"connect_timeout": CONNECT_SECONDS}  # a silent server: seconds, not minutes
            try:
                with creation_lock(url), warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats, retries
                    storage = optuna.storages.RDBStorage(
                        url,
                        engine_kwargs=engine,
                        heartbeat_interval=HEARTBEAT_SECONDS,
                        grace_period=GRACE_SECONDS,
                        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
                    )
                    CLAIMS.create(storage.engine, checkfirst=True)
            except (sa.exc.SQLAlchemyError, ImportError) as error:  # down, refused, wrong password, no driver
                raise SweepStorageError(
                    f"The sweep's Optuna storage {mask_credentials(url)} cannot be used: "
                    f"{mask_credentials(first_line(error))}. Start its database (make up starts the stack's), "
                    "fix sweep.storage or TUNELOOP_OPTUNA_STORAGE, or unset both to keep sweeps in the home "
                    "folder's optuna.db."
                ) from None
            _storages[url] = storage
        return _storages[url]


def check_storage(config: SweepConfig) -> None:
    """Open the sweep's storage before anything else is written: one that is down or misconfigured
    is a SweepStorageError while nothing has been tracked yet."""
    rdb_storage(optuna_storage(config))


def now() -> datetime:
    """UTC now, naive (how the claims table stores times on every database)."""
    return datetime.now(UTC).replace(tzinfo=None)


def claim_round(url: str, sweep_id: str, round_number: int, flow_run_id: str) -> str | None:
    """Claim the round for this flow run in one INSERT: None when it is ours (now, from an earlier
    attempt of the same flow run, or taken over from a run whose lease ran out), else the flow run
    that holds it."""
    engine = rdb_storage(url).engine
    where = (CLAIMS.c.sweep_id == sweep_id, CLAIMS.c["round"] == round_number)
    try:
        with engine.begin() as connection:
            row = {"sweep_id": sweep_id, "round": round_number, "flow_run_id": flow_run_id}
            connection.execute(CLAIMS.insert().values(**row, claimed_at=now(), renewed_at=now()))
        return None
    except sa.exc.IntegrityError:
        with engine.begin() as connection:
            holder, renewed = connection.execute(
                sa.select(CLAIMS.c.flow_run_id, CLAIMS.c.renewed_at).where(*where)
            ).one()
            if holder == flow_run_id:
                return None
            if (now() - renewed).total_seconds() < LEASE_SECONDS:
                return str(holder)
            taken = connection.execute(  # only if nobody renewed or took it since we read it
                CLAIMS.update()
                .where(*where, CLAIMS.c.flow_run_id == holder, CLAIMS.c.renewed_at == renewed)
                .values(flow_run_id=flow_run_id, renewed_at=now())
            )
        return None if taken.rowcount == 1 else str(holder)


@contextmanager
def repeating(action: Callable[[], None], name: str) -> Iterator[None]:
    """Call `action` now and every HEARTBEAT_SECONDS in a thread while the body runs (a call that
    fails, the database being briefly away, is simply made again next interval)."""
    stopped = threading.Event()

    def loop() -> None:
        while True:
            with suppress(Exception):
                action()
            if stopped.wait(HEARTBEAT_SECONDS):
                return

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        thread.join(5)


@contextmanager
def round_lease(url: str, sweep_id: str, round_number: int, flow_run_id: str) -> Iterator[None]:
    """Renew this flow run's claim of the round while the body runs. A body that fails (Ctrl-C,
    SIGTERM, an error) gives the claim up, so the next run of the round (`--continue`) takes it over
    at once; only a run that died without a word (kill -9, a lost node) leaves it to lapse."""
    engine = rdb_storage(url).engine
    where = (CLAIMS.c.sweep_id == sweep_id, CLAIMS.c["round"] == round_number, CLAIMS.c.flow_run_id == flow_run_id)

    def renew() -> None:
        with engine.begin() as connection:
            connection.execute(CLAIMS.update().where(*where).values(renewed_at=now()))

    with repeating(renew, f"tuneloop-lease-{sweep_id}-{round_number}"):
        try:
            yield
        except BaseException:
            with suppress(Exception), engine.begin() as connection:  # unreachable: the lease lapses instead
                connection.execute(CLAIMS.delete().where(*where))
            raise


def read_study(url: str, study_name: str) -> Any | None:
    """The study to read (no sampler needed), or None when the storage has no such study."""
    import optuna

    storage = rdb_storage(url)
    try:
        storage.get_study_id_from_name(study_name)
    except KeyError:
        return None
    return optuna.load_study(study_name=study_name, storage=storage)


def load_sweep(config: SweepConfig, sweep_id: str) -> SweepState | None:
    """A sweep started earlier, from its study; None for a new sweep id."""
    url = optuna_storage(config)
    study = read_study(url, sweep_id)
    return load_setup(study, url) if study is not None else None


def sweep_study(state: SweepState) -> Any:
    """The sweep's study, to read its record."""
    study = read_study(state.storage, state.study_name)
    if study is None:
        raise RuntimeError(f"The study of {state.sweep_id} is gone from its storage")
    return study


def sweep_trials(state: SweepState) -> list[TrialResult]:
    """Every trial of the sweep that counts (see study_trials)."""
    return study_trials(sweep_study(state))


def save_setup(study: Any, state: SweepState, config: dict[str, Any]) -> None:
    """The sweep's setup, budget and resolved config, once, when it starts (the storage URL is not
    stored: it may hold a password)."""
    study.set_user_attr(SETUP, state.model_dump(mode="json", exclude={"storage", "budget"}))
    study.set_user_attr(BUDGET, state.budget.model_dump(mode="json"))
    study.set_user_attr(CONFIG, {**config, "sweep": {**config["sweep"], "storage": None}})


def stored_config(state: SweepState, given: Any) -> Any:
    """The config the sweep started with, which every later round and trial runs: what decides trust
    (model.trust_remote_code), the data and the model never come from a later run's parameters (an
    event payload, a form). The storage stays the given run's (it found the study); None for a
    sweep started before configs were stored."""
    raw = sweep_study(state).user_attrs.get(CONFIG)
    if raw is None:
        return None
    if raw["sweep"].get("sampler") == "gp":  # stored before gp refused pruners, which only made it repeat itself
        raw = {**raw, "sweep": {**raw["sweep"], "pruner": "none"}}
    config = type(given).model_validate(raw)
    update = {"storage": given.sweep.storage, **state.budget.limits()}  # the budget as stored, extensions included
    return config.model_copy(update={"sweep": config.sweep.model_copy(update=update)})


def load_setup(study: Any, storage: str) -> SweepState | None:
    """The sweep as it was started (None when the study has no setup: not a tuneloop sweep)."""
    attributes = study.user_attrs
    if SETUP not in attributes:
        return None
    return SweepState.model_validate({**attributes[SETUP], "storage": storage, "budget": attributes[BUDGET]})


def extend_budget(study: Any, budget: Budget, reason: str) -> Budget:
    """Replace the stored budget, recording the change (who asked is in `reason`)."""
    old = Budget.model_validate(study.user_attrs[BUDGET])
    entry = {"at": datetime.now(UTC).isoformat(), "from": old.limits(), "to": budget.limits(), "reason": reason}
    extended = budget.model_copy(update={"history": [*old.history, entry]})
    study.set_user_attr(BUDGET, extended.model_dump(mode="json"))
    return extended


def close_round_record(study: Any, round_number: int, summary: dict[str, Any]) -> None:
    """The round's summary, which also marks it as closed."""
    study.set_user_attr(f"{ROUND}{round_number}", summary)


def closed_rounds(study: Any) -> dict[int, dict[str, Any]]:
    """Round number -> summary of every closed round."""
    found = {int(key.removeprefix(ROUND)): value for key, value in study.user_attrs.items() if key.startswith(ROUND)}
    return dict(sorted(found.items()))


def trial_result(trial: Any) -> TrialResult:
    """A trial of the study as tuneloop reports it (state, score and outcome from its attributes)."""
    attributes = trial.user_attrs
    state = STATES.get(trial.state.name, "failed")
    score = trial.value if trial.value is not None else attributes.get("score")
    return TrialResult(
        number=trial.number,
        round=int(attributes.get("round", 0)),
        params=dict(trial.params),
        state=state,
        score=score,
        history=attributes.get("history", []),
        model_path=attributes.get("model_path"),
        seconds=float(attributes.get("seconds", 0.0)),
        started_at=attributes.get("started_at"),
        mlflow_run_id=attributes.get("mlflow_run_id"),
        error=attributes.get("error"),
        plan=attributes.get("plan"),
        best_epoch=attributes.get("best_epoch"),
        predictions=attributes.get("predictions"),
        folds=int(attributes.get("folds", 0)),
        retry_of=trial.system_attrs.get("failed_trial"),
    )


def study_trials(study: Any) -> list[TrialResult]:
    """Every trial that counts, oldest first: a dead trial that was retried is counted by its retry
    (one trial that ran, not two)."""
    frozen = study.get_trials(deepcopy=False)
    retried = retried_numbers(frozen)
    return [trial_result(trial) for trial in frozen if trial.number not in retried]


def retried_numbers(frozen: list[Any]) -> set[int]:
    """The numbers of the dead trials that these stored trials retry."""
    return {trial.system_attrs["failed_trial"] for trial in frozen if "failed_trial" in trial.system_attrs}


def ask(study: Any) -> Any:
    """`study.ask()`: a waiting trial (a dead trial's retry) first, else a new one. Without Optuna's
    warning that heartbeats are meant for study.optimize: tuneloop beats for its trials itself."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        return study.ask()


def trial_id(url: str, study_name: str, trial_number: int) -> int:
    """The storage's id of a study's trial."""
    storage = rdb_storage(url)
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), trial_number)


def frozen_trial(url: str, study_name: str, trial_number: int) -> Any:
    """The stored trial (parameters, attributes, state) by its number."""
    return rdb_storage(url).get_trial(trial_id(url, study_name, trial_number))


def heartbeat(url: str, study_name: str, trial_number: int) -> Any:
    """Beat for the trial while the body runs (Optuna beats only inside study.optimize; tuneloop's
    trials are asked by the round and run by trial flow runs, maybe on other hosts)."""
    storage, beating = rdb_storage(url), trial_id(url, study_name, trial_number)
    return repeating(lambda: storage.record_heartbeat(beating), f"tuneloop-heartbeat-{trial_number}")


def continue_sweep(sweep_id: str, limits: dict[str, float | None]) -> tuple[Any, int]:
    """For `tuneloop sweep --continue`: the sweep's config as it started (its folder's config.yaml,
    storage from the environment as then), with its stored budget extended by the given `limits`
    (recorded in the budget's history); and the round to run next."""
    from tasks.config.load import load_config
    from tasks.config.pipeline import SweepPipelineConfig
    from tasks.core.errors import ConfigError

    stored = tuneloop_home() / "sweeps" / sweep_id / "config.yaml"
    if not stored.is_file():
        raise ConfigError(
            f"No sweep {sweep_id!r} under {stored.parent.parent}: `tuneloop compare` lists the sweeps "
            "(their ids start with sweep-); use the TUNELOOP_HOME the sweep ran with."
        )
    pipeline = load_config(stored, [], SweepPipelineConfig)
    url = optuna_storage(pipeline.sweep)
    study = read_study(url, sweep_id)
    state = load_setup(study, url) if study is not None else None
    if study is None or state is None:
        raise ConfigError(f"The study of {sweep_id} is not in its Optuna storage {masked(url)}.")
    asked = {name: value for name, value in limits.items() if value is not None}
    lower = [
        f"{name}={value:g} < {getattr(state.budget, name):g}"
        for name, value in asked.items()
        if value < getattr(state.budget, name)
    ]
    if lower:
        raise ConfigError(f"--continue only extends a budget; {', '.join(lower)} would shrink it.")
    if asked:
        extend_budget(study, state.budget.model_copy(update=asked), "tuneloop sweep --continue")
    budget = {**state.budget.limits(), **asked}
    pipeline = pipeline.model_copy(update={"sweep": pipeline.sweep.model_copy(update=budget)})
    return pipeline, max(closed_rounds(study), default=0) + 1


def other_host_on_sqlite(state: SweepState) -> str | None:
    """A warning when this process runs a sweep started on another host over a SQLite storage: the
    file is then on a shared volume (SQLite's locking is unreliable over NFS) or not the sweep's at all."""
    import socket

    here = socket.gethostname()
    if not sqlite_file(state.storage) or not state.host or state.host == here:
        return None
    return (
        f"{state.sweep_id} started on host {state.host} and this run is on {here}, over the SQLite storage "
        f"{masked(state.storage)}: SQLite is safe only on one host's local disk. With rounds and trials on several "
        "hosts, use one Postgres database (TUNELOOP_OPTUNA_STORAGE=postgresql://...; make up with TUNELOOP_DB_URL)."
    )


def masked(url: str) -> str:
    """A database URL for messages: the password replaced by ***."""
    from tasks.core.secrets import mask_credentials

    return mask_credentials(url)
