"""Dataset contracts as Great Expectations suites in JSON, one file per contract.

Each expectation's `meta` says how tuneloop treats a failure (Great Expectations stores a
severity but does not act on it):

- `check`: a short name used in reports and quarantine reasons;
- `scope`: `row` checks run on every loaded row and send failing rows to quarantine;
  `table` checks run on the rows that remain and judge the table as a whole;
- `severity`: `blocking` stops the run, `warning` is reported only;
- `requires`: a config parameter that must be set for the check to apply (e.g. `labels`).
"""

from __future__ import annotations

import json
from importlib import resources


def load_suite(name: str) -> dict:
    """The suite `name` (a file `<name>.json` in this package) as a dict."""
    available = sorted(
        path.name.removesuffix(".json") for path in resources.files(__name__).iterdir() if path.name.endswith(".json")
    )
    if name not in available:
        from tasks.core.errors import ConfigError

        raise ConfigError(f"No expectation suite '{name}' (validation.suite). Available: {', '.join(available)}.")
    return json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8"))
