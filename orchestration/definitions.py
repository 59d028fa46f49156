"""Tally's Dagster code location (workspace.yaml points here): everything is declared under defs/,
one folder per domain, and loaded from there."""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
