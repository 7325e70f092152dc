"""One-line reasons from library errors."""

from __future__ import annotations

import pytest

from tasks.core.errors import first_line

RETRY = "API request to http://h:9/api/x failed with exception HTTPConnectionPool(host='h', port=9): Max retries "
RETRY += "exceeded with url: /api/2.0/mlflow/experiments/get-by-name?experiment_name=tuneloop (Caused by "


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        (
            "NewConnectionError(\"HTTPConnection(host='h', port=9): Failed to establish a new connection: "
            '[Errno 111] Connection refused"))',
            "[Errno 111] Connection refused (NewConnectionError)",
        ),
        (
            "NameResolutionError(\"<urllib3.connection.HTTPConnection object at 0x7f>: Failed to resolve 'h' "
            '([Errno -2] Name or service not known)"))',
            "[Errno -2] Name or service not known (NameResolutionError)",
        ),
        (
            "ConnectTimeoutError(<urllib3.connection.HTTPConnection object at 0x7f>, "
            "'Connection to h timed out. (connect timeout=15)'))",
            "Connection to h timed out. (connect timeout=15) (ConnectTimeoutError)",
        ),
        ("ResponseError('too many 500 error responses'))", "too many 500 error responses (ResponseError)"),
    ],
)
def test_a_request_given_up_on_is_its_reason_not_the_retry_report(cause: str, reason: str) -> None:
    """urllib3's retry report is longer than a line's limit and ends with the reason; the reason is
    what a user needs (the message around it names the server)."""
    assert first_line(RuntimeError(RETRY + cause)) == reason


def test_other_errors_keep_their_first_line() -> None:
    assert first_line(ValueError("bad value\nmore detail")) == "bad value"
    assert first_line(ValueError()) == "ValueError"
    assert first_line(ValueError("x" * 500), limit=10) == "x" * 10
