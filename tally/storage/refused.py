"""Events a store refused for their content, by stream position: recorded, then dead-lettered.

When PostgreSQL or Cassandra refuses part of a flush (a value it cannot hold that ingest did not
catch), retrying cannot help and holding the partition back would stop it for good. The dataflow
records the refused events' positions here and restarts; reading them again, it dead-letters
them with the reason (dataflows.aggregate), so the rest of their flush commits exactly once.
"""

from __future__ import annotations

import re

import psycopg

from tally.flush import LINE_BITS

# A reason may quote the very value that was refused: keep it storable and short.
_UNSTORABLE = re.compile("[\x00-\x1f\ud800-\udfff]")
MAX_REASON = 500


def storable(reason: str) -> str:
    return _UNSTORABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", reason)[:MAX_REASON]


def record(conn: psycopg.Connection, topic: str, partition: int, positions: dict[int, str]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "insert into refused_positions (topic, kafka_partition, position, reason) values (%s, %s, %s, %s)"
            " on conflict do nothing",
            [(topic, partition, p, storable(r)) for p, r in positions.items()],
        )


def load(conn: psycopg.Connection, topic: str, partition: int, from_offset: int) -> dict[int, str]:
    """Refused positions the partition has still to read (at or after `from_offset`)."""
    rows = conn.execute(
        "select position, reason from refused_positions where topic = %s and kafka_partition = %s and position >= %s",
        (topic, partition, from_offset << LINE_BITS),
    )
    return dict(rows.fetchall())
