"""Benchmarks that print figures (events/s, latency percentiles). Run against a running stack:
`make run`, then `.venv/bin/python -m benchmarks.<name> --help`."""
