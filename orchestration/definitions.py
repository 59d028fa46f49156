"""Tally's Dagster code location: everything is declared under defs/, one folder per domain."""

import dagster as dg

import orchestration.defs


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_defs(defs_root=orchestration.defs)
