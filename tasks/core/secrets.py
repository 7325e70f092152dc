"""Credentials never reach a message or a log: every `scheme://user:password@host` in a text is shown
as `scheme://user:***@host` (tuneloop's errors mask themselves; a logging filter masks what the
libraries log, on the handlers of the console and of the Prefect UI)."""

from __future__ import annotations

import logging
import re

# Bounded parts (a scheme of at most 32 characters, a user and a password of at most 1024), so the
# search is linear in the text: an unbounded scheme made it quadratic (45 s on 100 KB of letters).
CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31}://[^/:@\s'\"]{1,1024}):[^@/\s'\"]{1,1024}@")


def mask_credentials(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    if "://" not in text:  # most messages: no URL at all
        return text
    return CREDENTIALS.sub(r"\1:***@", text)


class MaskCredentials(logging.Filter):
    """Masks URL passwords in a log record's message (and its exception text, once formatted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_credentials(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if mask_credentials(text) != text:  # the traceback names the URL: keep only the masked text
                record.exc_text, record.exc_info = mask_credentials(text), None
        return True


def mask_logs() -> None:
    """Install MaskCredentials on the handlers of the root, Prefect's and its run loggers (once);
    Prefect's handlers exist once its logging is set up, so call this inside a flow run."""
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(existing, MaskCredentials) for existing in handler.filters):
                handler.addFilter(MaskCredentials())
