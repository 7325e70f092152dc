"""Running a round's trials: each trial is a flow run of the `trial` flow, at most
`sweep.max_concurrent_trials` at a time. From a deployment they are runs of the trial deployment
(`sweep.trial_deployment`, started with `run_deployment(..., as_subflow=True)`: children of the
round's run), so the work pool decides where each runs; locally one at a time in this process,
or several at once each in a process of its own (a pool the round starts): transformers' Trainer
keeps process-wide state (accelerate's AcceleratorState and GradientState, torch's random
generator) that two trainings in one process would share and corrupt. The round waits on the
study, not on the flow runs: a trial is over when the study has its outcome. A trial whose worker
died is failed by its stale heartbeat, or as soon as its flow run ends without an outcome, and
retried once (the retry resumes from its checkpoints)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Protocol

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.core.gpus import VISIBLE, host_gpus
from tasks.core.home import set_variable
from tasks.core.signals import keep_lost_signals
from tasks.sweep.record import ask, frozen_trial, rdb_storage, retried_numbers, sweep_study
from tasks.sweep.state import SweepState
from tasks.sweep.trial import INTERRUPTED

POLL_SECONDS = 2.0
STOP_GRACE_SECONDS = 10.0
LEAK_WARNING = "ignore:resource_tracker:UserWarning"


class Handle(Protocol):
    def done(self) -> bool: ...


class InTask:
    """A trial flow run inside a task run of the round (on the round's thread-pool task runner)."""

    def __init__(self, future: Any) -> None:
        self.future = future

    def done(self) -> bool:
        return bool(self.future.wrapped_future.done())


class OnWorker:
    """A trial flow run that a worker runs; done when Prefect says its state is final."""

    def __init__(self, flow_run_id: Any) -> None:
        self.flow_run_id = flow_run_id

    def done(self) -> bool:
        from prefect import get_client

        with get_client(sync_client=True) as client:
            state = client.read_flow_run(self.flow_run_id).state
        return state is not None and state.is_final()


@task(name="run_trial_here", cache_policy=NO_CACHE)
def run_trial_here(run: Callable[[int], Any], number: int) -> None:
    """Trial `number` as a flow run here (the round's process, or one of its trial processes), a
    child of the round's run through this task run (its outcome is in the study)."""
    run(number)


def trial_process(round_pid: int, threads: int) -> None:
    """Run first in each trial process of a local round: the kernel kills it when the round's
    process dies (`kill -9`, the OOM killer), as it does the temporary Prefect server (Linux's
    parent-death signal; elsewhere a no-op); a SIGTERM from its round or pool that lands in a
    finalizer is not lost (keep_lost_signals); and it computes on its share of the cores."""
    keep_lost_signals()
    share_cores(threads)
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != round_pid:  # it died before the line above
        os._exit(1)


def seeing(gpus: str | None, run: Callable[[int], Any], number: int) -> None:
    """`run(number)` in a trial process, choosing from the host's GPUs `gpus`: Prefect hands each
    task of the pool the round's environment, whose CUDA_VISIBLE_DEVICES names only the round's own
    GPU once it took one (for its model screening and its scoring of the best trial)."""
    set_variable(VISIBLE, gpus)  # before the trial's first CUDA call
    run(number)


def cores_each(concurrent: int) -> int:
    """The CPU cores each of `concurrent` trials running at once on this machine may compute on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // concurrent)


def share_cores(threads: int) -> None:
    """torch computes on `threads` threads, unless OMP_NUM_THREADS says otherwise: trials at once
    that each start a thread per core oversubscribe the CPU, and OpenMP threads that wait on each
    other spin, burning the cores the other trials need."""
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(threads)


class TrialProcesses:
    """The spawned processes of a local round's trials (Prefect's process-pool task runner), which
    report to this run's Prefect server and die with the round. When one dies (`kill -9`, the OOM
    killer) the pool breaks and stops the others: their trials end without an outcome and are
    retried from their checkpoints, and the next trial starts a fresh pool."""

    def __init__(self, run: Callable[[int], Any], concurrent: int) -> None:
        self.run, self.concurrent = run, concurrent
        self.runner: Any = None
        self.stopped = False

    def start(self, number: int) -> Handle:
        if self.runner is not None and getattr(self.runner._executor, "_broken", False):  # not public
            self.close()
        if self.runner is None:
            from prefect.task_runners import ProcessPoolTaskRunner

            pool = ProcessPoolTaskRunner(
                max_workers=self.concurrent,
                initializer=trial_process,
                initargs=(os.getpid(), cores_each(self.concurrent)),
            )
            self.runner = pool.__enter__()
        run = partial(seeing, host_gpus(), self.run)
        return InTask(self.runner.submit(run_trial_here, {"run": run, "number": number}))

    def stop(self) -> None:
        """End the trial processes now (an interrupted round): their trials are failed by their
        heartbeats and resume on --continue."""
        for process in pool_processes(self.runner):
            process.terminate()
        self.stopped = True

    def close(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            if self.stopped or getattr(runner._executor, "_broken", False):
                end_processes(runner)
                abandon_messages(runner)
            runner.__exit__(None, None, None)


def pool_processes(runner: Any) -> list[Any]:
    """The processes of a Prefect process-pool runner's executor (none before it started any)."""
    executor = getattr(runner, "_executor", None)
    return list((getattr(executor, "_processes", None) or {}).values())  # not public


def end_processes(runner: Any) -> None:
    """Trial processes told to stop (SIGTERM from stop(), or from the pool when one of them died)
    get STOP_GRACE_SECONDS to end (Prefect marks their runs crashed on the way out); one still
    running then, stuck where no Python runs its signal handler, is killed: the pool's shutdown
    would wait for it for good. Waits on the processes' sentinels: the pool reaps them itself."""
    from multiprocessing.connection import wait

    alive = {}
    for process in pool_processes(runner):
        with contextlib.suppress(ValueError):  # closed: long gone
            alive[process.sentinel] = process
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while alive and (left := deadline - time.monotonic()) > 0:
        for ended in wait(list(alive), left):
            alive.pop(ended)
    for process in alive.values():
        process.kill()


def abandon_messages(runner: Any) -> None:
    """Trial processes log to the round through one queue of the pool. One that was killed or
    terminated while sending a line holds that queue's lock for good: Prefect's last message on
    shutting the pool down would wait on the lock, and the command would hang at exit joining the
    thread that sends it (seen: a SIGTERM'd sweep that never exited). So Prefect is left nothing
    to send, close or wait for: the queue and the thread that reads it (a daemon, blocked on it for
    good; closing the queue under it would end it in a traceback) end with the command."""
    queue = getattr(runner, "_subprocess_message_queue", None)  # not public
    if queue is not None:
        queue.cancel_join_thread()
    runner._subprocess_message_queue = None
    runner._message_forwarding_thread = None  # else Prefect waits 5 s for it and warns


@contextmanager
def in_process(run: Callable[[int], Any], concurrent: int) -> Iterator[Callable[[int], Handle]]:
    """Start trials by calling `run(number)` (the trial flow; picklable: a partial of a module-level
    function) in a task run of the round: one at a time on the round's own task runner, several at
    once each in one of `concurrent` spawned processes (TrialProcesses). An interrupted round stops
    its trials (the thread's at its next step, the processes at once) instead of waiting for them;
    a killed one takes its processes along."""
    if concurrent <= 1:
        INTERRUPTED.clear()
        try:
            yield lambda number: InTask(run_trial_here.submit(run, number))
        except BaseException:
            INTERRUPTED.set()  # the trial in this process's thread stops at its next step
            raise
        return
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with get_client(sync_client=True) as client:
        api = str(client.api_url)  # named, or each process would start a temporary server of its own
    # Stopped processes leave semaphores that multiprocessing's resource tracker (started with the
    # pool, with these warning options) reports in a warning after the command's own last line.
    if LEAK_WARNING not in sys.warnoptions:
        sys.warnoptions.append(LEAK_WARNING)
    processes = TrialProcesses(run, concurrent)
    with temporary_settings(updates={PREFECT_API_URL: api}):
        try:
            yield processes.start
        except BaseException:
            processes.stop()
            raise
        finally:
            processes.close()


@contextmanager
def on_workers(deployment: str, parameters: Callable[[int], dict[str, Any]]) -> Iterator[Callable[[int], Handle]]:
    """Start trials as runs of the trial deployment, children of the round's flow run."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    def start(number: int) -> Handle:
        given = parameters(number)
        # run_deployment is sync/async-dual; called from sync code it returns the FlowRun itself.
        run: FlowRun = run_deployment(  # type: ignore[assignment]
            deployment,
            parameters=given,
            timeout=0,
            as_subflow=True,
            idempotency_key=f"{given['sweep_id']}:trial:{number}",
        )
        return OnWorker(run.id)

    yield start


def died(state: SweepState, study: Any, number: int) -> None:
    """Fail a trial whose run ended without an outcome and queue its one retry, as a stale
    heartbeat would (sooner: Prefect saw the process end)."""
    import optuna

    study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    callback = rdb_storage(state.storage).get_heartbeat_stale_trial_callback()
    if callback is not None and number not in retried_numbers(study.get_trials(deepcopy=False)):
        callback(study, frozen_trial(state.storage, state.study_name, number))


def pause(running: Iterable[Handle]) -> None:
    """Wait POLL_SECONDS before looking again, or less when a trial running in this process (or in
    the round's own processes) ends sooner."""
    here = [handle for handle in running if isinstance(handle, InTask)]
    deadline = time.monotonic() + POLL_SECONDS
    while time.monotonic() < deadline and not any(handle.done() for handle in here):
        time.sleep(0.1 if here else POLL_SECONDS)


def run_round(
    state: SweepState, new: list[int], unfinished: list[int], concurrent: int, start: Callable[[int], Handle], log: Any
) -> list[int]:
    """Run the trials `new` (at most `concurrent` at once) and wait for `unfinished` ones (an earlier
    attempt's, settled by their heartbeats) until the study has an outcome for every one of them
    and their retries; the numbers of the trials that ran."""
    import optuna

    study = sweep_study(state)
    queue, waiting_on = list(new), set(unfinished)
    running: dict[int, Handle] = {}
    ran: list[int] = list(unfinished)
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial fails; its retry waits
        trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
        if any(trial.state == optuna.trial.TrialState.WAITING for trial in trials.values()):
            retry = ask(study)  # the oldest waiting retry, with the dead trial's parameters
            dead = frozen_trial(state.storage, state.study_name, retry.number).system_attrs.get("failed_trial")
            log.info("Trial %s died: retrying it as trial %d from its last checkpoint", dead, retry.number)
            queue.append(retry.number)
            continue
        retry_queued = False  # by died(): the next pass reads it from the study
        for number, handle in list(running.items()):
            if trials[number].state.is_finished():
                del running[number]
            elif handle.done():  # its flow run ended without telling the study: its process died
                died(state, study, number)
                log.warning("Trial %d's run ended without an outcome (its process died)", number)
                del running[number]
                retry_queued = True
        waiting_on = {number for number in waiting_on if not trials[number].state.is_finished()}
        while queue and len(running) < concurrent:
            number = queue.pop(0)
            ran.append(number)
            running[number] = start(number)
        if not (queue or running or waiting_on or retry_queued):
            break
        pause(running.values())
    return ran
