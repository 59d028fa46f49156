"""Backfill: history loaded through the stream's own code (tally.backfill.importer)."""
