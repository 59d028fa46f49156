"""Clients of Tally's stores: rollups in PostgreSQL/TimescaleDB, raw events in Cassandra."""
