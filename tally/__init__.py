"""Tally: real-time event aggregation. This package is the shared core every other part imports."""

__version__ = "0.1.0"
