"""Bytewax dataflows: event-time aggregation from Kafka into TimescaleDB rollups and Cassandra raw events.

May import `tally` (the core); nothing in `tally` imports this package.
"""
