"""What a quality check hands back: plain dataclasses, no Great Expectations types, so the Dagster
layer (and a person at a prompt) can read a result without importing GX, and the raw GX result
JSON rides along for Data Docs.

Severity: every expectation carries GX's own `severity` field (critical, warning, info). Dagster's
asset checks know two levels, so critical maps to ERROR and the others to WARN (`DAGSTER_SEVERITY`);
each suite's meta lists the result per expectation (`with_severity_meta`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# GX FailureSeverity value -> the name of Dagster's AssetCheckSeverity member.
DAGSTER_SEVERITY = {"critical": "ERROR", "warning": "WARN", "info": "WARN"}
# Unexpected values kept per expectation in the outcome (the raw JSON keeps GX's own, up to 200).
EXAMPLES = 5


class StoreUnavailable(Exception):
    """The store a check reads cannot be reached: the check cannot say anything about the data.
    The message names the store, its address and the reason, e.g.
    `PostgreSQL at postgres.tally.svc:5432: Connection refused`."""

    @classmethod
    def of(cls, store: str, host: str, port: int, error: BaseException) -> StoreUnavailable:
        """From a driver's exception: its first line, without the address the message repeats."""
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = lines[0] if lines else type(error).__name__
        for marker in ("Last error: ", "failed: "):  # Cassandra's and libpq's wording
            reason = reason.rsplit(marker, 1)[-1]
        return cls(f"{store} at {host}:{port}: {reason}")


@dataclass(frozen=True)
class ExpectationOutcome:
    suite: str
    expectation_type: str
    columns: tuple[str, ...]
    success: bool
    severity: str  # "ERROR" or "WARN"
    unexpected_count: int | None
    unexpected_values: list
    sentence: str  # for a person: what is expected, and what was found
    description: str


@dataclass(frozen=True)
class SuiteOutcome:
    suite: str
    success: bool
    expectations: list[ExpectationOutcome]
    statistics: dict
    result_json: dict  # the ExpectationSuiteValidationResult as GX serialises it
    details: dict = field(default_factory=dict)  # what was checked: window, rows, event types

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if not e.success]

    @property
    def severity(self) -> str | None:
        """The worst severity among failed expectations: "ERROR", "WARN", or None if all held."""
        levels = {e.severity for e in self.failed}
        return "ERROR" if "ERROR" in levels else ("WARN" if levels else None)

    def summary(self) -> str:
        if self.success:
            return f"{self.suite}: all {len(self.expectations)} expectations hold"
        return f"{self.suite}: " + "; ".join(e.sentence for e in self.failed)


def with_severity_meta(suite: Any) -> Any:
    """Record each expectation's Dagster severity in the suite's meta, by description, from the
    expectations' own `severity` (so it is stated once, on the expectation)."""
    suite.meta["dagster_severity"] = {
        e.description: DAGSTER_SEVERITY[_severity_value(e.severity)] for e in suite.expectations
    }
    return suite


def outcome_of(result: Any, details: dict | None = None) -> SuiteOutcome:
    """A SuiteOutcome from a GX ExpectationSuiteValidationResult."""
    suite = result.suite_name
    return SuiteOutcome(
        suite=suite,
        success=bool(result.success),
        expectations=[_expectation(suite, r) for r in result.results],
        statistics=_plain(dict(result.statistics)),
        result_json=_plain(result.to_json_dict()),
        details=_plain(details or {}),
    )


def _expectation(suite: str, r: Any) -> ExpectationOutcome:
    config = r.expectation_config
    kwargs = config.kwargs
    columns = tuple(kwargs[k] for k in ("column", "column_A", "column_B") if kwargs.get(k))
    description = config.description or config.type
    res = r.result or {}
    if config.type == "unexpected_rows_expectation":
        count = res.get("observed_value")
        values = (res.get("details") or {}).get("unexpected_rows") or []
    else:
        count = res.get("unexpected_count")
        values = res.get("unexpected_index_list") or res.get("partial_unexpected_list") or []
    values = _plain(list(values[:EXAMPLES]))
    severity = DAGSTER_SEVERITY.get(_severity_value(config.severity), "ERROR")
    return ExpectationOutcome(
        suite=suite,
        expectation_type=config.type,
        columns=columns,
        success=bool(r.success),
        severity=severity,
        unexpected_count=count,
        unexpected_values=values,
        sentence=_sentence(description, r, count, res.get("element_count"), values),
        description=description,
    )


def _severity_value(severity: Any) -> str:
    return str(getattr(severity, "value", severity))


def _sentence(description: str, r: Any, count: int | None, rows: int | None, values: list) -> str:
    error = _exception(r)
    if error:
        return f"{description}: could not be checked ({error})"
    checked = f" ({rows} rows checked)" if rows is not None else ""
    if r.success:
        return f"{description}: holds{checked}"
    of = f" of {rows}" if rows is not None else ""
    example = f", e.g. {json.dumps(values[0], default=str)}" if values else ""
    rows_word = "row" if count == 1 and rows is None else "rows"
    return f"{description}: broken by {count}{of} {rows_word}{example}"


def _exception(r: Any) -> str | None:
    """GX keeps a metric's exception instead of raising it; the first message, if any."""
    info = r.exception_info or {}
    found = [info] if "raised_exception" in info else list(info.values())
    for item in found:
        if isinstance(item, dict) and item.get("raised_exception"):
            return str(item.get("exception_message") or "an exception").strip().splitlines()[0]
    return None


def _plain(value: Any) -> Any:
    """JSON-safe (datetimes, decimals and numpy numbers become strings or numbers)."""
    return json.loads(json.dumps(value, default=_default))


def _default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)
