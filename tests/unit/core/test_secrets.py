"""Passwords in URLs never reach a message or a log line."""

from __future__ import annotations

import logging

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
