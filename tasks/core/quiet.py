"""Library output that would flood a flow run's log or the console: per-batch progress bars of
loading, mapping and saving, and transformers' warnings (its LOAD REPORT table, in colour even
when piped), and urllib3's line for every retried request while the tracking server is down.
tuneloop says what matters itself, in one line (epochs, the new classifier head, an outage)."""

from __future__ import annotations


def quiet_libraries() -> None:
    """Turn off transformers' and datasets' progress bars, transformers' warnings and urllib3's retries."""
    import logging

    import datasets
    from transformers.utils import logging as transformers_logging

    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
