"""One GPU per trial on a host with several: which GPU a trial takes, waiting when all are held,
and a dead trial's GPU freed (file locks, real processes; no GPU needed: the host's GPUs are
named by CUDA_VISIBLE_DEVICES, which is all the choice reads)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tasks.core.gpus import VISIBLE, cuda_started, one_gpu
from tests.helpers import hold_a_gpu

LOG = logging.getLogger("test-gpus")


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv(VISIBLE, "3,5")
    monkeypatch.setenv("TUNELOOP_GPU_LOCKS", str(tmp_path / "locks"))
    return tmp_path / "locks"


def test_trials_at_once_each_take_a_gpu_no_other_holds_and_see_only_it(two_gpus: Path) -> None:
    first, gpu = hold_a_gpu("3,5")
    try:
        assert gpu == "3"
        with one_gpu(LOG) as second:
            assert second == "5" and os.environ[VISIBLE] == "5"
        assert os.environ[VISIBLE] == "5", "CUDA cannot switch GPUs: the process stays on its GPU"
    finally:
        first.kill()


def test_a_process_that_took_a_gpu_runs_its_next_trial_on_it_waiting_while_another_holds_it(two_gpus: Path) -> None:
    """A local round's trial process runs one trial after another, on the GPU its CUDA started with."""
    with one_gpu(LOG) as first:
        assert first == "3"
    other, its_gpu = hold_a_gpu("3,5")  # took the GPU this process just released
    taken: list[str | None] = []

    def next_trial() -> None:
        with one_gpu(LOG) as gpu:
            taken.append(gpu)

    try:
        assert its_gpu == "3"
        waiting = threading.Thread(target=next_trial)
        waiting.start()
        time.sleep(1.5)
        assert not taken, "GPU 5 is free, but this process's CUDA sees GPU 3 only: it waits for that one"
        other.send_signal(signal.SIGKILL)
        waiting.join(10)
        assert taken == ["3"] and os.environ[VISIBLE] == "3"
    finally:
        other.kill()


def test_a_block_inside_one_that_holds_the_gpu_shares_it(two_gpus: Path) -> None:
    """A sweep's one-at-a-time trial runs in the sweep's process, which holds a GPU for it: the
    trial takes that one at once (a second lock on the same file would wait on the first)."""
    taken: list[str | None] = []

    def trial() -> None:
        with one_gpu(LOG) as gpu:
            taken.append(gpu)

    with one_gpu(LOG) as sweep:
        inside = threading.Thread(target=trial)  # the trial's task run is a thread of the sweep's process
        inside.start()
        inside.join(5)
        assert taken == [sweep] == ["3"], "the trial shares its sweep's GPU"
    other, its_gpu = hold_a_gpu("3,5")
    try:
        assert its_gpu == "3", "released when the outer block ends"
    finally:
        other.kill()


def test_with_every_gpu_held_a_trial_waits_and_takes_the_gpu_of_one_that_was_killed(two_gpus: Path) -> None:
    holders = [hold_a_gpu("3,5"), hold_a_gpu("3,5")]
    taken: list[str | None] = []

    def third_trial() -> None:
        with one_gpu(LOG) as gpu:
            taken.append(gpu)

    try:
        assert sorted(gpu for _, gpu in holders) == ["3", "5"]
        waiting = threading.Thread(target=third_trial)
        waiting.start()
        time.sleep(1.5)
        assert not taken, "both GPUs held: the third trial waits"
        killed, its_gpu = holders[1]
        killed.send_signal(signal.SIGKILL)  # kill -9: its lock goes with the process
        waiting.join(10)
        assert taken == [its_gpu]
    finally:
        for holder, _ in holders:
            holder.kill()


@pytest.mark.parametrize(
    ("visible", "device"), [("0", "auto"), ("", "cuda"), ("-1", "auto"), ("3,5", "cpu"), ("3,5", "mps")]
)
def test_nothing_to_choose_leaves_the_devices_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, visible: str, device: str
) -> None:
    """One GPU (a Kubernetes Job's), none, or a training set to run on the CPU (or Apple's GPU)."""
    monkeypatch.setenv(VISIBLE, visible)
    monkeypatch.setenv("TUNELOOP_GPU_LOCKS", str(tmp_path))
    with one_gpu(LOG, device) as gpu:
        assert gpu is None and os.environ[VISIBLE] == visible
    assert list(tmp_path.iterdir()) == [], "no lock taken"


def test_a_lock_folder_that_cannot_be_used_is_one_message_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tasks.core.errors import ConfigError

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(VISIBLE, "3,5")
    monkeypatch.setenv("TUNELOOP_GPU_LOCKS", str(tmp_path / "a-file"))
    with (
        pytest.raises(ConfigError, match=r"GPU lock folder .*a-file cannot be used .*TUNELOOP_GPU_LOCKS"),
        one_gpu(LOG),
    ):
        pass
    assert os.environ[VISIBLE] == "3,5"


def test_a_process_without_the_cuda_driver_has_not_started_it() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU (its driver has started now)")
    assert cuda_started() is False


@pytest.mark.gpu
def test_on_a_gpu_machine_the_driver_starts_with_the_first_cuda_call_not_when_gpus_are_counted() -> None:
    """The choice relies on this: counting the host's GPUs and checking the trials' device (NVML) leave
    the CUDA driver unstarted, so CUDA_VISIBLE_DEVICES set after them still decides what the trial
    sees; any CUDA call starts it."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here")
    code = (
        "import os, torch\nfrom tasks.core.gpus import cuda_started, visible_gpus\n"
        "from tasks.config.train import TrainConfig\nfrom tasks.model.plan import training_device\n"
        "os.environ.pop('CUDA_VISIBLE_DEVICES', None)\ngpus = visible_gpus()\n"
        "assert training_device(TrainConfig()) == 'cuda'\nbefore = cuda_started()\n"
        "os.environ['CUDA_VISIBLE_DEVICES'] = gpus[-1]\ntorch.cuda.is_available()\n"
        "print(len(gpus) >= 1, before, cuda_started(), torch.cuda.device_count())"
    )
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert answer.stdout.split() == ["True", "False", "True", "1"], answer.stdout + answer.stderr
