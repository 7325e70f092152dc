"""The MLflow model registry: register a finished run's model as a new version (alias `candidate`),
the champion rule (beat the `champion` on the same test split), promote and roll back. The
previous champion keeps the alias `previous`. Aliases, not stages: MLflow 3 deprecates stages.
Every decision is recorded as tags on the model version."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any, Literal

from prefect import get_run_logger, task
from pydantic import BaseModel, computed_field

from tasks.config.promotion import PromotionConfig
from tasks.core.errors import RegistryError, first_line
from tasks.core.metrics import SplitMetrics
from tasks.core.paired import PairedComparison, PairedDifference
from tasks.tracking.model import global_store
from tasks.tracking.store import absent_store, damaged_store, mlflow_client, version_link

CANDIDATE, CHAMPION, PREVIOUS = "candidate", "champion", "previous"


Decision = Literal[
    "promoted", "approved", "rejected", "rejected_by_reviewer", "timeout", "not_attempted", "manual", "rolled_back"
]


class ModelVersionRef(BaseModel):
    """One registered model version."""

    name: str
    version: str
    run_id: str | None
    source: str
    uri: str


class Comparison(BaseModel):
    """Candidate versus champion on the same test split."""

    metric: str
    candidate: SplitMetrics
    champion: SplitMetrics | None
    champion_version: str | None
    delta: float | None
    interval: PairedDifference | None = None
    class_deltas: dict[str, float]
    class_intervals: dict[str, PairedDifference] = {}
    regressions: dict[str, float]
    eligible: bool
    reason: str


class Candidate(BaseModel):
    """What a run offers the registry: one logged model (either family) and its test predictions."""

    family: Literal["finetune", "baseline"] = "finetune"
    base_model: str
    method: str
    run_id: str
    model_id: str | None
    test: SplitMetrics
    test_predictions: str  # CSV of the test rows with `predicted`
    blocked: str | None = None  # why it may not be promoted, whatever the champion rule says


class PromotionResult(BaseModel):
    """What happened to one candidate."""

    version: ModelVersionRef | None
    comparison: Comparison | None
    decision: Decision | Literal["not_registered"]
    champion: str | None
    message: str
    comment: str = ""
    reviewer: str = ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def champion_version(self) -> str | None:
        """The champion's version number after this decision (None: there is none)."""
        return self.champion

    @computed_field  # type: ignore[prop-decorator]
    @property
    def reason(self) -> str:
        """Why the candidate was or was not promoted, in one sentence."""
        return self.message


def parse_model_uri(location: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of `models:/<name>@<alias>` or `models:/<name>/<version>`."""
    found = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))/?", location)
    if not found:
        raise RegistryError(f"Cannot read model URI {location!r}: write models:/<name>@<alias> or models:/<name>/<n>.")
    return found.group(1), found.group(2), found.group(3)


def find_version(tracking_uri: str, name: str, alias: str | None = None, version: str | None = None) -> Any | None:
    """The model version with that alias or number; None when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    registry = mlflow_client(tracking_uri)
    try:
        return registry.get_model_version_by_alias(name, alias) if alias else registry.get_model_version(name, version)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def resolve_model_uri(location: str, tracking_uri: str) -> tuple[str, str, str]:
    """(name, version, artifact location) of `models:/<name>@<alias>` or `models:/<name>/<n>`: an
    alias is resolved to the version it points at now."""
    name, alias, version = parse_model_uri(location)
    found = find_version(tracking_uri, name, alias, version)
    if found is None:
        which = f"alias @{alias}" if alias else f"version {version}"
        raise RegistryError(
            f"Registered model {name!r} has no {which} in {tracking_uri}. List versions in the MLflow UI, "
            "or promote one first (tuneloop promote --version N)."
        )
    return name, str(found.version), mlflow_client(tracking_uri).get_model_version_download_uri(name, found.version)


def version_ref(version: Any) -> ModelVersionRef:
    """Our record of an MLflow model version."""
    return ModelVersionRef(
        name=version.name,
        version=str(version.version),
        run_id=version.run_id,
        source=version.source,
        uri=f"models:/{version.name}/{version.version}",
    )


def register_version(tracking_uri: str, name: str, run_id: str, model_id: str, tags: dict[str, str]) -> Any:
    """A new version of `name` from the run's logged model `model_id`; alias `candidate` moves to it."""
    from mlflow.exceptions import MlflowException

    registry = mlflow_client(tracking_uri)
    try:
        registry.create_registered_model(name, description="Text classifiers fine-tuned by tuneloop.")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    with global_store(tracking_uri):  # a local registry looks the logged model up in the global store
        version = registry.create_model_version(
            name, f"models:/{model_id}", run_id=run_id, tags=tags, model_id=model_id
        )
    registry.set_registered_model_alias(name, CANDIDATE, version.version)
    return version


def significant_drops(paired: PairedComparison, config: PromotionConfig) -> dict[str, PairedDifference]:
    """Classes whose F1 drops by more than `max_class_regression`, significantly (the whole interval
    below 0), on at least `min_class_support` test texts: one text of a three-text class is not a drop."""
    return {
        label: difference
        for label, difference in paired.per_class.items()
        if paired.support[label] >= config.min_class_support
        and difference.high < 0
        and -difference.delta > config.max_class_regression
    }


def passes_rule(difference: PairedDifference, config: PromotionConfig) -> bool:
    """better: the difference is above 0 with the configured confidence (and at least min_improvement);
    not_worse: above -margin with that confidence."""
    if config.rule == "not_worse":
        return difference.low > -config.margin
    return difference.low > 0 and difference.delta >= config.min_improvement


def rule_reason(difference: PairedDifference, version: str | None, config: PromotionConfig, passed: bool) -> str:
    """The rule's verdict in words, with the interval."""
    said = f"{config.metric} {difference.interval()} against champion v{version} on {difference.rows} test texts"
    if config.rule == "not_worse":
        verdict = (
            f"not worse by more than margin {config.margin}"
            if passed
            else f"may be worse by more than margin {config.margin}"
        )
    elif passed:
        verdict = f"better with {config.confidence:.0%} confidence"
    elif difference.low > 0:
        verdict = f"better, but by less than min_improvement {config.min_improvement}"
    else:
        verdict = f"not better with {config.confidence:.0%} confidence (the test split cannot tell them apart)"
    return f"{said}: {verdict}"


def champion_rule(
    candidate: SplitMetrics,
    champion: SplitMetrics | None,
    version: str | None,
    config: PromotionConfig,
    paired: PairedComparison | None,
) -> Comparison:
    """The champion/challenger rule on the same test rows, decided by a paired test, not raw differences:
    `promotion.rule` (better with `confidence`, or not worse within `margin`), and no class whose F1
    drops significantly (see significant_drops). No champion yet: the candidate is eligible."""
    if champion is None or paired is None:
        return Comparison(
            metric=config.metric,
            candidate=candidate,
            champion=None,
            champion_version=None,
            delta=None,
            class_deltas={},
            regressions={},
            eligible=True,
            reason="no champion yet",
        )
    class_deltas = {label: difference.delta for label, difference in paired.per_class.items()}
    drops = significant_drops(paired, config)
    passed = passes_rule(paired.overall, config)
    reason = rule_reason(paired.overall, version, config, passed)
    if drops:
        worst = min(drops, key=lambda label: drops[label].delta)
        reason = (
            f"class {worst!r} F1 drops {drops[worst].interval()} on {paired.support[worst]} texts: significant and "
            f"more than max_class_regression {config.max_class_regression} ({reason})"
        )
    return Comparison(
        metric=config.metric,
        candidate=candidate,
        champion=champion,
        champion_version=version,
        delta=paired.overall.delta,
        interval=paired.overall,
        class_deltas=class_deltas,
        class_intervals=paired.per_class,
        regressions={label: difference.delta for label, difference in drops.items()},
        eligible=passed and not drops,
        reason=reason,
    )


def set_champion(tracking_uri: str, name: str, version: str, decision: Decision, tags: dict[str, str]) -> str | None:
    """Make `version` the champion; the old champion becomes `previous`. Returns the old champion's
    number. The new champion remembers whom it replaced (tag), so rollbacks can go back step by step."""
    registry = mlflow_client(tracking_uri)
    old = find_version(tracking_uri, name, CHAMPION)
    if old is not None and str(old.version) == str(version):
        raise RegistryError(f"Version {version} of {name!r} is already the champion.")
    record(tracking_uri, name, version, {**tags, "promotion.decision": decision})
    if old is not None:
        registry.set_model_version_tag(name, version, "promotion.replaced_version", str(old.version))
        registry.set_registered_model_alias(name, PREVIOUS, old.version)
    registry.set_registered_model_alias(name, CHAMPION, version)
    move_champion_tag(tracking_uri, name, old, version)
    return str(old.version) if old is not None else None


def move_champion_tag(tracking_uri: str, name: str, old: Any | None, version: str) -> None:
    """The champion's MLflow run carries the tag `champion` (the version and a link to its page), so
    the run list shows which run is live; the run of the one it replaced loses it."""
    registry = mlflow_client(tracking_uri)
    if old is not None and old.run_id:
        with contextlib.suppress(Exception):  # the old run may have been deleted
            registry.delete_tag(old.run_id, "champion")
    new = find_version(tracking_uri, name, version=version)
    if new is not None and new.run_id:
        registry.set_tag(new.run_id, "champion", f"{name} v{version}: {version_link(tracking_uri, name, version)}")


def promotion_sentence(version: ModelVersionRef, decision: str, reason: str, champion: str | None) -> str:
    """Why the version was or was not promoted, in one sentence."""
    name = f"{version.name} v{version.version}"
    if decision in ("promoted", "approved"):
        how = " after approval" if decision == "approved" else ""
        return f"{name} is the new champion{how}: {reason}."
    why = {
        "rejected": reason,
        "rejected_by_reviewer": f"the reviewer rejected it ({reason})",
        "timeout": f"no reviewer answered in time ({reason})",
        "not_attempted": "promotion.mode=never registers without promoting",
    }.get(decision, reason)
    kept = f"; v{champion} stays champion" if champion else "; there is no champion"
    return f"{name} registered as candidate, not promoted: {why}{kept}."


def record(tracking_uri: str, name: str, version: str, tags: dict[str, str]) -> None:
    """Tags on one model version."""
    registry = mlflow_client(tracking_uri)
    for key, value in tags.items():
        registry.set_model_version_tag(name, version, key, value[:5000])


@contextlib.contextmanager
def registry_errors(tracking_uri: str) -> Iterator[None]:
    """Anything MLflow raises (an unreachable server, a refused change) as one RegistryError line.
    A SQLite store that does not exist yet holds no model: said as such, and not created."""
    from tasks.core.errors import TuneloopError

    absent = absent_store(tracking_uri, "is registered")
    if absent:
        raise RegistryError(absent)
    try:
        yield
    except TuneloopError:
        raise
    except Exception as error:
        fix = damaged_store(tracking_uri, error) or "Start the server (make up) or fix MLFLOW_TRACKING_URI."
        raise RegistryError(f"The MLflow model registry at {tracking_uri} failed: {first_line(error)}. {fix}") from None


def promote_version(tracking_uri: str, name: str, version: str, comment: str = "") -> str | None:
    """`tuneloop promote --version N`: a person's decision, recorded as such."""
    if find_version(tracking_uri, name, version=version) is None:
        raise RegistryError(f"Registered model {name!r} has no version {version} in {tracking_uri}.")
    return set_champion(tracking_uri, name, version, "manual", {"promotion.comment": comment} if comment else {})


def rollback(tracking_uri: str, name: str) -> tuple[str, str]:
    """Champion back to `previous`; `previous` moves one step further back (or is removed).
    Returns (old champion, new champion)."""
    registry = mlflow_client(tracking_uri)
    current, previous = find_version(tracking_uri, name, CHAMPION), find_version(tracking_uri, name, PREVIOUS)
    if current is None or previous is None:
        raise RegistryError(
            f"Nothing to roll back to: {name!r} has no {'champion' if current is None else 'previous'} alias in "
            f"{tracking_uri}. Use tuneloop promote --version N to choose a version."
        )
    registry.set_model_version_tag(name, current.version, "promotion.decision", "rolled_back")
    registry.set_registered_model_alias(name, CHAMPION, previous.version)
    move_champion_tag(tracking_uri, name, current, str(previous.version))
    before = previous.tags.get("promotion.replaced_version")
    if before and before != str(current.version) and find_version(tracking_uri, name, version=before) is not None:
        registry.set_registered_model_alias(name, PREVIOUS, before)
    else:
        registry.delete_registered_model_alias(name, PREVIOUS)
    return str(current.version), str(previous.version)


@task(name="register_model")
def register_model(
    tracking_uri: str, name: str, run_id: str, model_id: str | None, tags: dict[str, str]
) -> ModelVersionRef:
    """A new registered version from the run's logged MLflow Model, alias `candidate`."""
    if model_id is None:
        raise RegistryError(
            f"Run {run_id} logged no model to register (tracking.log_model=false): set tracking.log_model=true "
            "or promotion.register_model=false."
        )
    try:
        version = register_version(tracking_uri, name, run_id, model_id, tags)
    except Exception as error:
        raise RegistryError(
            f"Registering the model of run {run_id} as {name!r} failed: {first_line(error)}. The run and its model "
            "are kept in MLflow; register it later with the MLflow UI."
        ) from None
    get_run_logger().info("Registered %s version %s (alias candidate)", name, version.version)
    return version_ref(version)
