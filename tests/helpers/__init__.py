"""Helpers the tests share (imported, never fixtures): paths, a free port, tables, tiny models,
shrunk configs, Prefect artifacts and the local stack. Fixtures are in the conftest files."""

from __future__ import annotations

import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"
SMS_SPAM = SHARED_DATA / "sms_spam" / "SMSSpamCollection.tsv"
CLINC150 = SHARED_DATA / "clinc150"


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sample_command(subcommand: str, *settings: str) -> list[str]:
    """The installed `tuneloop <subcommand>` on the sample's config, with `--set` for each setting."""
    import sys

    command = [
        str(Path(sys.executable).with_name("tuneloop")),
        subcommand,
        "--config",
        str(ROOT / "data/sample/config.yaml"),
    ]
    for setting in settings:
        command += ["--set", setting]
    return command
