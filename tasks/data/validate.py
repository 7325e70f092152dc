"""The data-quality gate: run the dataset contract (a Great Expectations suite) on the loaded
table, quarantine the rows that can be isolated, and stop the run when the data is unfit."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from expectations import load_suite
from tasks.config.data import DataConfig
from tasks.config.validation import ValidationConfig
from tasks.core.errors import DataValidationError
from tasks.core.workspace import STEP_CACHE
from tasks.data.load import DatasetRef, read_table, text_groups, write_table

EXAMPLES_SHOWN = 3


class CheckResult(BaseModel):
    """One expectation's outcome, in our terms."""

    check: str
    scope: Literal["row", "table"]
    severity: Literal["blocking", "warning"]
    success: bool
    failed_rows: int = 0
    detail: str = ""
    examples: list[str] = Field(default_factory=list)


class ValidationReport(BaseModel):
    """What the gate found, where its files are, and the clean table when the data passed."""

    source: str
    dataset_sha256: str
    rows: int
    clean_rows: int
    quarantined_rows: int
    quarantine_fraction: float
    passed: bool
    problems: list[str]
    warnings: list[str]
    checks: list[CheckResult]
    clean: DatasetRef | None
    folder: str
    summary_path: str
    quarantine_path: str | None
    data_docs_path: str | None


def suite_parameters(validation: ValidationConfig, data: DataConfig) -> dict[str, Any]:
    """Values for the suite's `$PARAMETER` placeholders."""
    return {
        "min_rows": validation.min_rows,
        "min_examples_per_class": validation.min_examples_per_class,
        "min_text_length": validation.min_text_length,
        "max_text_length": validation.max_text_length,
        "labels": data.allowed_labels,
    }


def suite_part(suite: dict, scope: str, parameters: dict[str, Any]) -> dict:
    """The expectations of one scope whose required parameters are set."""
    kept = [
        expectation
        for expectation in suite["expectations"]
        if expectation["meta"]["scope"] == scope
        and parameters.get(expectation["meta"].get("requires", ""), True) is not None
    ]
    return {"name": f"{suite['name']}.{scope}", "expectations": kept, "meta": suite.get("meta", {})}


def labels_per_text(groups: np.ndarray, labels: pd.Series) -> np.ndarray:
    """For each row, how many distinct labels rows with the same text carry (1 when no conflict)."""
    codes, _ = pd.factorize(labels)
    labelled = (groups >= 0) & (codes >= 0)
    first = np.full(groups.max() + 1 if len(groups) else 0, -1)
    first[groups[labelled][::-1]] = codes[labelled][::-1]  # the first label seen for each text
    conflicted = np.zeros_like(first, dtype=bool)
    conflicted[groups[labelled & (codes != first[np.maximum(groups, 0)])]] = True
    counts = np.ones(len(groups), dtype="int64")
    rows = np.flatnonzero(labelled & conflicted[np.maximum(groups, 0)])
    if len(rows):  # rare: count exactly on the few conflicting rows only
        subset = pd.DataFrame({"group": groups[rows], "label": codes[rows]})
        counts[rows] = subset.groupby("group")["label"].transform("nunique").to_numpy()
    return counts


def row_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The loaded table plus what row checks need: a text group id and the labels per text."""
    frame = table.reset_index(drop=True)
    frame["text_group"] = text_groups(frame["text"])
    frame["labels_for_text"] = labels_per_text(frame["text_group"].to_numpy(), frame["label"])
    return frame


def table_frame(clean: pd.DataFrame) -> pd.DataFrame:
    """The clean rows plus the size of each row's class, for the class-size check."""
    frame = clean.reset_index(drop=True)
    frame["examples_in_class"] = frame["label"].map(frame["label"].value_counts()).astype("int64")
    return frame


def suite_columns(suite: dict) -> list[str]:
    """The columns a suite reads: only these are handed to Great Expectations (it hashes its input)."""
    return sorted(
        {expectation["kwargs"]["column"] for expectation in suite["expectations"] if "column" in expectation["kwargs"]}
    )


def run_suite(suite: dict, frame: pd.DataFrame, parameters: dict[str, Any], docs_dir: Path | None) -> list:
    """Validate `frame` with a fresh ephemeral Great Expectations context: one context shared
    across threads gave wrong results in concurrent validations."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)  # its INFO lines are noise in our run log
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    actions: list[Any] = []
    if docs_dir is not None:
        context.add_data_docs_site(
            site_name="run",
            site_config={
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            },
        )
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["run"]))
    gx_suite = context.suites.add(ExpectationSuite(**suite))
    batch = context.data_sources.add_pandas("tuneloop").add_dataframe_asset(suite["name"])
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(
            name=suite["name"], data=batch.add_batch_definition_whole_dataframe("all"), suite=gx_suite
        )
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=suite["name"],
            validation_definitions=[definition],
            actions=actions,
            result_format={"result_format": "COMPLETE", "partial_unexpected_count": EXAMPLES_SHOWN},
        )
    )
    outcome = checkpoint.run(
        batch_parameters={"dataframe": frame[suite_columns(suite)]}, expectation_parameters=parameters
    )
    return [result for run in outcome.run_results.values() for result in run.results]


def row_examples(frame: pd.DataFrame, rows: list[int]) -> list[str]:
    """A few failing rows, shortened, for messages."""
    examples = []
    for row in rows[:EXAMPLES_SHOWN]:
        text = frame.at[row, "text"]
        shown = "<null>" if pd.isna(text) else repr(text if len(text) <= 60 else text[:57] + "...")
        examples.append(f"id {frame.at[row, 'id']}: text {shown}, label {frame.at[row, 'label']!r}")
    return examples


def describe(result: Any, frame: pd.DataFrame) -> CheckResult:
    """Turn one Great Expectations result into a CheckResult with a readable detail."""
    meta = result.expectation_config.meta
    outcome = result.result or {}
    rows = list(outcome.get("unexpected_index_list") or [])
    check = CheckResult(
        check=meta["check"],
        scope=meta["scope"],
        severity=meta["severity"],
        success=bool(result.success),
        failed_rows=len(rows),
    )
    if check.success:
        return check
    name, kwargs = meta["check"], result.expectation_config.kwargs
    if name == "min_examples_per_class":
        counts = frame.loc[rows, "label"].value_counts()
        check.detail = ", ".join(f"'{label}' has {count}" for label, count in counts.items())
        check.detail += f" (each class needs at least {kwargs['min_value']:g})"
    elif name == "min_classes":
        found = sorted(frame["label"].dropna().unique().tolist())
        check.detail = f"{len(found)} class(es) {found}; at least 2 are needed to train a classifier"
    elif name == "min_rows":
        check.detail = f"{outcome.get('observed_value')} clean rows; at least {kwargs['min_value']} needed"
    elif name == "duplicate_texts":
        extra = len(rows) - frame.loc[rows, "text_group"].nunique()
        check.detail = (
            f"{extra} rows repeat another row's text ({len(rows)} rows in duplicate groups); "
            "the split keeps each group in one split"
        )
    else:
        check.detail = f"{len(rows)} row{'s' if len(rows) != 1 else ''}: {meta.get('reason', name)}"
    check.examples = row_examples(frame, rows)
    return check


def quarantine_reasons(results: list, frame: pd.DataFrame) -> pd.Series:
    """Each failing row's reasons, joined; indexed like `frame`."""
    reasons: dict[int, list[str]] = {}
    for result in results:
        if not result.success:
            for row in (result.result or {}).get("unexpected_index_list") or []:
                reasons.setdefault(row, []).append(result.expectation_config.meta["reason"])
    return pd.Series({row: "; ".join(found) for row, found in reasons.items()}, dtype="string")


def blocking_and_warnings(
    checks: list[CheckResult], quarantined: int, rows: int, max_fraction: float
) -> tuple[list[str], list[str]]:
    """What blocks training (failed blocking table checks; too many quarantined rows) and what is
    only reported (warnings; quarantined rows when nothing blocks)."""
    fraction = quarantined / max(rows, 1)
    problems = [
        f"{check.check}: {check.detail}"
        for check in checks
        if not check.success and check.scope == "table" and check.severity == "blocking"
    ]
    if fraction > max_fraction:
        failed = "; ".join(
            check.detail + (f" (e.g. {check.examples[0]})" if check.examples else "")
            for check in checks
            if not check.success and check.scope == "row"
        )
        problems.insert(
            0,
            f"{quarantined} of {rows} rows ({fraction:.1%}) failed row checks, more than "
            f"validation.max_quarantine_fraction={max_fraction:.0%}: {failed}",
        )
    warnings = [
        f"{check.check}: {'quarantined ' if check.scope == 'row' else ''}{check.detail}"
        for check in checks
        if not check.success and (check.severity == "warning" or (check.scope == "row" and not problems))
    ]
    return problems, warnings


def validate_table(
    table: pd.DataFrame, source: str, dataset_sha256: str, validation: ValidationConfig, data: DataConfig, folder: Path
) -> ValidationReport:
    """Run the contract on `table`, write quarantine, clean table, summary and Data Docs to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    suite, parameters = load_suite(validation.suite), suite_parameters(validation, data)
    docs_dir = folder / "data_docs" if validation.data_docs else None
    rows = row_frame(table)
    row_results = run_suite(suite_part(suite, "row", parameters), rows, parameters, docs_dir)
    reasons = quarantine_reasons(row_results, rows)
    quarantine_path = None
    if len(reasons):
        quarantined = rows.loc[reasons.index, ["id", "text", "label"]].assign(reason=reasons)
        quarantine_path = folder / "quarantine.csv"
        quarantined.sort_index().to_csv(quarantine_path, index=False)
    clean = table_frame(rows.drop(index=reasons.index))
    table_results = run_suite(suite_part(suite, "table", parameters), clean, parameters, docs_dir)
    checks = [describe(result, rows) for result in row_results]
    checks += [describe(result, clean) for result in table_results]
    fraction = len(reasons) / max(len(rows), 1)
    problems, warnings = blocking_and_warnings(checks, len(reasons), len(rows), validation.max_quarantine_fraction)
    clean_ref = None if problems else write_table(clean[["id", "text", "label"]], folder / "clean.parquet")
    report = ValidationReport(
        source=source,
        dataset_sha256=dataset_sha256,
        rows=len(rows),
        clean_rows=len(clean),
        quarantined_rows=len(reasons),
        quarantine_fraction=round(fraction, 6),
        passed=not problems,
        problems=problems,
        warnings=warnings,
        checks=checks,
        clean=clean_ref,
        folder=str(folder),
        summary_path=str(folder / "summary.json"),
        quarantine_path=str(quarantine_path) if quarantine_path else None,
        data_docs_path=str(docs_dir / "index.html") if docs_dir else None,
    )
    Path(report.summary_path).write_text(report.model_dump_json(indent=2), encoding="utf-8")
    return report


def report_markdown(report: ValidationReport) -> str:
    """The report as the markdown of a Prefect artifact."""
    verdict = "passed" if report.passed else "**failed**"
    lines = [
        f"# Data validation {verdict}: `{report.source}`",
        "",
        f"{report.rows} rows, {report.clean_rows} clean, {report.quarantined_rows} quarantined "
        f"({report.quarantine_fraction:.1%}). Dataset SHA-256 `{report.dataset_sha256[:12]}`.",
        "",
        "| check | scope | severity | result | detail |",
        "|---|---|---|---|---|",
    ]
    for check in report.checks:
        failed = "rows quarantined" if check.scope == "row" and report.passed else "FAILED"
        result = "ok" if check.success else ("warning" if check.severity == "warning" else failed)
        lines.append(
            f"| {check.check} | {check.scope} | {check.severity} | {result} | {check.detail.replace('|', '/')} |"
        )
    lines += ["", f"Summary: `{report.summary_path}`"]
    if report.quarantine_path:
        lines.append(f"Quarantine: `{report.quarantine_path}`")
    if report.data_docs_path:
        lines.append(f"Data Docs: `{report.data_docs_path}`")
    return "\n".join(lines)


def raise_if_failed(report: ValidationReport) -> None:
    """Stop with every problem listed when the gate failed."""
    if not report.passed:
        listed = "\n  - ".join(report.problems)
        raise DataValidationError(
            f"Data validation failed for {report.source}:\n  - {listed}\n"
            f"Details: {report.summary_path}"
            + (f"; quarantined rows: {report.quarantine_path}" if report.quarantine_path else "")
        )


@task(name="validate_dataset", cache_policy=STEP_CACHE, persist_result=True)
def validate_dataset(
    dataset: DatasetRef, source: str, validation: ValidationConfig, data: DataConfig, folder: Path
) -> ValidationReport:
    """Validate a loaded table against the contract; raise DataValidationError when it is unfit."""
    report = validate_table(read_table(dataset), source, dataset.sha256, validation, data, folder)
    log = get_run_logger()
    log.info(
        "Validated %s: %d rows, %d clean, %d quarantined",
        source,
        report.rows,
        report.clean_rows,
        report.quarantined_rows,
    )
    for warning in report.warnings:
        log.warning("Data warning: %s", warning)
    create_markdown_artifact(
        key="data-validation", markdown=report_markdown(report), description=f"Data validation of {source}"
    )
    raise_if_failed(report)
    return report


def set_aside_unseen_labels(
    data: ValidationReport, test: ValidationReport, validation: ValidationConfig
) -> ValidationReport:
    """The separate test set's rows whose label the training data never has: quarantined with that
    reason (the model could never predict them; scored, they would drop out of macro F1 and make
    the model look better), or the run stops (`validation.unseen_test_labels`)."""
    if data.clean is None or test.clean is None:
        return test
    known = set(read_table(data.clean)["label"])
    table = read_table(test.clean)
    unseen = ~table["label"].isin(known)
    if not unseen.any():
        return test
    names = ", ".join(repr(label) for label in sorted(set(table.loc[unseen, "label"]))[:10])
    if unseen.all():
        raise DataValidationError(
            f"No label of the test set {test.source} occurs in the training data ({names}; the training data "
            f"has {', '.join(repr(label) for label in sorted(known)[:10])}): is it the test file of another "
            "dataset, or is data.label_column another column in it? Point data.test_path (--test-data) at "
            "this dataset's test file, or leave it unset to split one off the training data."
        )
    if validation.unseen_test_labels == "fail":
        raise DataValidationError(
            f"{int(unseen.sum())} rows of the test set {test.source} have labels the training data never has: "
            f"{names}. The model could never predict them. Add training examples of those labels, or set "
            "validation.unseen_test_labels=quarantine to set those test rows aside."
        )
    folder = Path(test.folder)
    quarantined = table.loc[unseen, ["id", "text", "label"]].assign(reason="label never seen in training")
    path = folder / "quarantine.csv"
    if path.is_file():
        quarantined = pd.concat([pd.read_csv(path, dtype=str), quarantined], ignore_index=True)
    quarantined.to_csv(path, index=False)
    clean = write_table(table.loc[~unseen].reset_index(drop=True), folder / "clean.parquet")
    warning = f"{int(unseen.sum())} test rows quarantined: labels never seen in training ({names})"
    updated = test.model_copy(
        update={
            "clean": clean,
            "clean_rows": clean.rows,
            "quarantined_rows": test.quarantined_rows + int(unseen.sum()),
            "quarantine_path": str(path),
            "warnings": [*test.warnings, warning],
        }
    )
    Path(updated.summary_path).write_text(updated.model_dump_json(indent=2), encoding="utf-8")
    return updated


@task(name="check_test_labels")
def check_test_labels(data: ValidationReport, test: ValidationReport, validation: ValidationConfig) -> ValidationReport:
    """See set_aside_unseen_labels; the warning goes to the run's log."""
    checked = set_aside_unseen_labels(data, test, validation)
    if checked is not test:
        get_run_logger().warning("Data warning: %s", checked.warnings[-1])
    return checked


class DataReport(BaseModel):
    """The validation of the data and, when one is given, of the separate test set."""

    data: ValidationReport
    test: ValidationReport | None = None

    def clean_tables(self) -> tuple[DatasetRef, DatasetRef | None]:
        """The clean data and the clean separate test set (None without one), after both passed."""
        clean, test = self.data.clean, self.test.clean if self.test else None
        if clean is None or (self.test is not None and test is None):  # the gate raises first: a bug
            raise DataValidationError("The data did not pass validation, so it has no clean table to split.")
        return clean, test
