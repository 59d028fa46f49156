"""Great Expectations suites for Tally's stores, and the small API that runs them.

- `expectations.rollup_suite`: the minute and hour rollup tables in PostgreSQL (a GX PostgreSQL
  datasource, a query asset over one window).
- `expectations.raw_event_suite`: a sample of raw events from Cassandra (no GX datasource exists for it:
  `expectations.raw_sample` reads it into pandas).
- `expectations.run`: `validate_rollups` and `validate_raw_sample`, returning `SuiteOutcome`s
  (`expectations.outcome`) for the Dagster asset checks in orchestration/.

Importing this package does not import Great Expectations; running a check does.
"""

from expectations.outcome import ExpectationOutcome, StoreUnavailable, SuiteOutcome
from expectations.run import validate_raw_sample, validate_rollups

__all__ = ["ExpectationOutcome", "StoreUnavailable", "SuiteOutcome", "validate_raw_sample", "validate_rollups"]
