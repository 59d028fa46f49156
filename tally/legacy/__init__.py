"""Moving onto Tally from a legacy event system, the design proposal's migration path.

- Dual write (forwarder.py, sinks.py): the API forwards every accepted event to the legacy side too,
  in the background, so both systems see the same events during the move.
- The legacy side as a store Tally can ask (store.py): a PostgreSQL events table, the shape the
  PostgreSQL sink writes; another system plugs in by implementing `LegacyStore`.
- Comparison (compare.py): counts and sums per (hour, event_type) from both sides, and how long each
  took, for orchestration's migration/legacy_comparison asset and the quality report.
- Staged rollout: /api/aggregate answers a share of requests from the legacy store
  (tally.api.rollout), optionally asking both and counting where they differ.
"""
