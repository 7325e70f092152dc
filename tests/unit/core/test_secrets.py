"""Passwords in URLs never reach a message or a log line."""

from __future__ import annotations

import logging

import pytest

from tasks.core.errors import TrackingError, first_line
from tasks.core.secrets import MaskCredentials, mask_credentials


def test_every_url_password_in_a_text_is_masked() -> None:
    text = "to http://alice:s3cret@mlflow:5000/api and postgresql+psycopg2://bob:p%40ss@db:5432/x, not https://host/x"
    assert mask_credentials(text) == (
        "to http://alice:***@mlflow:5000/api and postgresql+psycopg2://bob:***@db:5432/x, not https://host/x"
    )


def test_errors_and_log_records_mask_themselves() -> None:
    error = TrackingError("MLflow at http://alice:s3cret@h:5000 refused")
    assert "s3cret" not in str(error) and "s3cret" not in repr(error)
    assert "s3cret" not in first_line(RuntimeError("request to http://alice:s3cret@h/api failed"))
    record = logging.LogRecord("x", logging.WARNING, "f", 1, "could not reach %s", ("http://a:s3cret@h",), None)
    try:
        raise RuntimeError("http://a:s3cret@h failed")
    except RuntimeError as problem:
        failing = logging.LogRecord("x", logging.ERROR, "f", 1, "boom", None, (RuntimeError, problem, None))
    assert MaskCredentials().filter(record) and record.getMessage() == "could not reach http://a:***@h"
    assert MaskCredentials().filter(failing) and "s3cret" not in logging.Formatter().format(failing)


def test_masking_is_linear_in_the_text() -> None:
    """A long value (a config string, an echoed line) is masked in milliseconds; the unbounded pattern
    took 45 s on 100 KB of letters."""
    import time

    from tasks.core.secrets import mask_credentials

    started = time.perf_counter()
    for text in ("a" * 200_000 + "://", ("http://" + "u" * 3000 + ":") * 60, "x://" * 50_000):
        mask_credentials(text)
    assert time.perf_counter() - started < 2
    assert mask_credentials("a" * 50_000 + " http://alice:s3cret@host").endswith("http://alice:***@host")


def test_json_output_masks_passwords(capsys: pytest.CaptureFixture[str]) -> None:
    from flows.console import emit_json

    emit_json({"tracking_uri": "http://alice:s3cret@mlflow:5000", "rows": 3})
    printed = capsys.readouterr().out
    assert "s3cret" not in printed and "http://alice:***@mlflow:5000" in printed
