"""A suite's outcome (expectations.SuiteOutcome) as Dagster asset check results: passed or not,
severity from the broken expectations' own (ERROR or WARN), and metadata an operator can act on.

The rollup suite checks minute and hour rows in one batch (an hour row is judged against its
minutes), so one run answers for both tables: a broken expectation counts against the table its
unexpected rows come from (their `width`: 60 = rollup_1m, 3600 = rollup_1h), and against both when
its rows are pairs of an hour and its minutes, or more than GX kept (it keeps at most 200).
"""

import json
from collections.abc import Iterable
from datetime import datetime

import dagster as dg

from expectations.outcome import ExpectationOutcome, SuiteOutcome

# Examples shown per broken expectation (the outcome keeps 5).
EXAMPLES = 3


def window_text(start: datetime, end: datetime) -> str:
    same_day = start.date() == end.date()
    return (
        f"{start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC" if same_day else f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    )


def tables_of(result: dict, expectation: ExpectationOutcome, widths: dict[int, dg.AssetKey]) -> set[dg.AssetKey]:
    """The tables a broken expectation's unexpected rows come from. `result`: its entry of the
    suite's result JSON (which keeps up to 200 rows, where the outcome keeps 5)."""
    res = result.get("result") or {}
    rows = res.get("unexpected_index_list") or (res.get("details") or {}).get("unexpected_rows") or []
    found = {row.get("width") for row in rows if isinstance(row, dict)}
    complete = expectation.unexpected_count is not None and len(rows) >= expectation.unexpected_count
    if rows and complete and found <= set(widths):
        return {widths[w] for w in found}
    return set(widths.values())


def per_table(outcome: SuiteOutcome, widths: dict[int, dg.AssetKey]) -> dict[dg.AssetKey, list[ExpectationOutcome]]:
    """The broken expectations that count against each table."""
    broken: dict[dg.AssetKey, list[ExpectationOutcome]] = {key: [] for key in widths.values()}
    for expectation, result in zip(outcome.expectations, outcome.result_json.get("results", []), strict=False):
        if not expectation.success:
            for key in tables_of(result, expectation, widths):
                broken[key].append(expectation)
    return broken


def check_result(
    asset: dg.AssetKey, check: str, outcome: SuiteOutcome, broken: list[ExpectationOutcome], window: str
) -> dg.AssetCheckResult:
    """One asset's verdict from the expectations that count against it."""
    total = len(outcome.expectations)
    rows = rows_checked(outcome)
    checked = f"{total} expectations" + (f" over {rows} rows" if rows is not None else "")
    if not broken:
        description = f"{window}: all {checked} hold"
    else:
        description = f"{window}: {len(broken)} of {checked} broken. " + "; ".join(e.sentence for e in broken[:3])
    metadata = {
        "window": dg.MetadataValue.text(window),
        "suite": dg.MetadataValue.text(outcome.suite),
        "expectations_broken": dg.MetadataValue.int(len(broken)),
        "unexpected_rows": dg.MetadataValue.int(sum(e.unexpected_count or 0 for e in broken)),
        "statistics": dg.MetadataValue.json(outcome.statistics),
        "checked": dg.MetadataValue.json(_short(outcome.details)),
    }
    if rows is not None:
        metadata["rows_checked"] = dg.MetadataValue.int(rows)
    if broken:
        metadata["broken_expectations"] = dg.MetadataValue.md(broken_table(broken))
        metadata["examples"] = dg.MetadataValue.md(examples_markdown(broken))
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=check,
        passed=not broken,
        severity=severity_of(broken),
        description=description,
        metadata=metadata,
    )


def unavailable(asset: dg.AssetKey, check: str, reason: str, window: str) -> dg.AssetCheckResult:
    """The verdict when a store cannot be reached: failed, since nothing could be said about the data."""
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=check,
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{window}: not checked, a store cannot be reached: {reason}",
        metadata={"window": dg.MetadataValue.text(window), "error": dg.MetadataValue.text(reason)},
    )


def severity_of(broken: Iterable[ExpectationOutcome]) -> dg.AssetCheckSeverity:
    """ERROR if any broken expectation is an ERROR; WARN if only warnings are broken."""
    levels = {e.severity for e in broken}
    return dg.AssetCheckSeverity.WARN if levels == {"WARN"} else dg.AssetCheckSeverity.ERROR


def rows_checked(outcome: SuiteOutcome) -> int | None:
    if "rows" in outcome.details:
        return outcome.details["rows"]
    counts = [(r.get("result") or {}).get("element_count") for r in outcome.result_json.get("results", [])]
    return max((c for c in counts if c is not None), default=None)


def broken_table(broken: list[ExpectationOutcome]) -> str:
    lines = ["| expectation | severity | unexpected | columns |", "|---|---|---|---|"]
    for e in broken:
        count = "-" if e.unexpected_count is None else str(e.unexpected_count)
        lines.append(f"| {_cell(e.description)} | {e.severity} | {count} | {_cell(', '.join(e.columns))} |")
    return "\n".join(lines)


def examples_markdown(broken: list[ExpectationOutcome]) -> str:
    parts = []
    for e in broken:
        if e.unexpected_count is None:  # not counted: the sentence says why (GX could not run it)
            parts.append(f"**{e.description}**: {e.sentence.removeprefix(e.description + ': ')}")
        else:
            parts.append(f"**{e.description}**: {e.unexpected_count} unexpected")
        if e.unexpected_values:
            shown = json.dumps(e.unexpected_values[:EXAMPLES], indent=1, default=str)
            parts.append(f"```json\n{shown}\n```")
    return "\n\n".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _short(details: dict) -> dict:
    """What was checked, with long lists cut (the raw sample can name 100 event types)."""
    return {
        k: (v[:10] + [f"... {len(v) - 10} more"] if isinstance(v, list) and len(v) > 10 else v)
        for k, v in details.items()
    }
