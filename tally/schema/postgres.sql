-- PostgreSQL/TimescaleDB schema of Tally's rollups. Applied idempotently by `tally stack up`
-- and by the dataflow at start. Wider rollups are dbt models (dbt_project/) built on these tables.

-- Minute rollups, one row per (minute, event_type, source) per Kafka partition: a partition
-- owns its rows, overwrites them with its running totals and commits its offset in the same
-- transaction, so a replay after a crash rewrites the same numbers instead of adding them again.
create table if not exists rollup_1m (
    bucket timestamptz not null,
    event_type text not null,
    source text not null,
    kafka_partition smallint not null,
    event_count bigint not null,
    value_count bigint not null,
    value_sum double precision not null,
    value_min double precision,
    value_max double precision,
    -- unique users: postgresql-hll storage format, merged with hll_union_agg(users::hll)
    users bytea not null,
    final boolean not null,
    updated_at timestamptz not null default now(),
    primary key (event_type, source, bucket, kafka_partition)
);
create index if not exists rollup_1m_bucket on rollup_1m (bucket);
create index if not exists rollup_1m_open on rollup_1m (kafka_partition, bucket) where not final;

-- Hour rollups, written by the dataflow when an hour closes, as its closed minutes merged in
-- minute order, so each hour row is exactly the sum of its minute rows; hourly and daily answers
-- read 60x fewer rows.
create table if not exists rollup_1h (like rollup_1m including all);

-- The late ledger: events that arrived after their minute closed (beyond the allowed lateness),
-- written in the same transaction as the rollups, so none is lost or counted twice. They are
-- counted per bucket as `late_count`; keyed by event_id, the dedup key, so a replay or a client
-- retry adds nothing.
create table if not exists late_events (
    event_id text primary key,
    bucket timestamptz not null,  -- the minute the event belongs to
    event_type text not null,
    source text not null,
    kafka_partition smallint not null,
    event jsonb not null,
    arrived_at timestamptz not null default now()
);
create index if not exists late_events_bucket on late_events (event_type, bucket);
-- Set by the correction step (tally.storage.corrections) once the event is added to the rollups;
-- from then on it is in `count`, no longer in `late_count`.
alter table late_events add column if not exists folded_at timestamptz;
create index if not exists late_events_unfolded on late_events (kafka_partition, bucket) where folded_at is null;
-- The stream position (tally.flush.position) of the ledgered copy, and whether the correction step
-- found it to be a copy of an event already stored earlier (beyond the dedup horizon): such a row
-- is marked folded without being added to the rollups.
alter table late_events add column if not exists position bigint;
alter table late_events add column if not exists duplicate boolean not null default false;
-- The partition's watermark when the event was ledgered: only an event later than the dedup
-- horizon then can be a copy the dataflow no longer remembered, so only those are looked up.
alter table late_events add column if not exists watermark timestamptz;
-- What the correction step decided raw storage must lose for this event, committed with the fold
-- and before raw storage changes (once the extra copies are gone, so is the evidence of a
-- duplicate): the first_offsets of the chunk pieces in the event's slot that must lose its
-- event_id (null: none), and when they did. Rows with pieces and no raw_fixed_at are finished by
-- the next run, whatever stopped the last one.
alter table late_events add column if not exists raw_drop_from bigint[];
alter table late_events add column if not exists raw_fixed_at timestamptz;
create index if not exists late_events_raw_unfixed on late_events (event_id)
    where raw_drop_from is not null and raw_fixed_at is null;

-- Where each partition's consumer resumes, written in the same transaction as its rollups.
create table if not exists stream_offsets (
    topic text not null,
    kafka_partition integer not null,
    next_offset bigint not null,
    watermark timestamptz,
    updated_at timestamptz not null default now(),
    primary key (topic, kafka_partition)
);
-- Up to this offset every flush of the partition commits, none only writes raw events between
-- commits: set when PostgreSQL refused a commit whose rows held events of such earlier flushes,
-- so that the replay meets the refusal in a flush that carries the events (dataflows.commit_sink).
alter table stream_offsets add column if not exists whole_until bigint;

-- Stream positions whose events a store refused for their content (a value it cannot hold, that
-- ingest did not catch): recorded by the dataflow before it restarts, then dead-lettered with the
-- reason when it reads them again, so the rest of their flush commits and nothing is retried forever.
create table if not exists refused_positions (
    topic text not null,
    kafka_partition integer not null,
    position bigint not null,  -- tally.flush.position: Kafka offset << 10 | line
    reason text not null,
    recorded_at timestamptz not null default now(),
    primary key (topic, kafka_partition, position)
);

-- Bumped in the same transaction by every writer that changes buckets already final (the
-- correction step folding in late events, backfills, migrations): API workers keep final days
-- cached and drop them when this moves. The dataflow's own flushes never touch final buckets.
create table if not exists rollup_revision (
    one boolean primary key default true check (one),
    revision bigint not null
);
insert into rollup_revision values (true, 0) on conflict do nothing;

-- Backfills (tally.backfill): a run per input (its identity: the files as they are, or the query),
-- its chunks committed in the transaction that adds their rollups (so a rerun skips them), and the
-- rows it rejected with the reason.
create table if not exists backfill_runs (
    run_id serial primary key,
    identity text not null unique,
    label text not null,
    chunk_rows integer not null,
    started_at timestamptz not null default now(),
    finished_at timestamptz
);
create table if not exists backfill_chunks (
    run_id integer not null references backfill_runs,
    chunk integer not null,
    rows_read integer not null,
    stored integer not null,  -- added here, in hours the stream had closed
    via_stream integer not null,  -- handed to Kafka, for hours it had not
    duplicates integer not null,
    rejected integer not null,
    committed_at timestamptz not null default now(),
    primary key (run_id, chunk)
);
create table if not exists backfill_rejects (
    run_id integer not null references backfill_runs,
    row_no bigint not null,  -- 0-based over the run's inputs, in the order given
    field text,
    reason text not null,
    primary key (run_id, row_no)
);

do $$
begin
    if exists (select 1 from pg_extension where extname = 'timescaledb') then
        perform create_hypertable('rollup_1m', by_range('bucket', interval '1 day'), if_not_exists => true);
        perform create_hypertable('rollup_1h', by_range('bucket', interval '30 days'), if_not_exists => true);
    end if;
end
$$;

-- Legacy vs Tally (tally.legacy.compare): both systems' count and sum per (hour, event_type), and
-- how long each side's query took, as last compared; the quality report reads it.
create table if not exists legacy_comparison (
    hour timestamptz not null,
    event_type text not null,
    legacy_count bigint not null,
    tally_count bigint not null,
    legacy_sum double precision not null,
    tally_sum double precision not null,
    legacy_query_s double precision not null,
    tally_query_s double precision not null,
    tolerance double precision not null,
    compared_at timestamptz not null default now(),
    primary key (hour, event_type)
);

-- The last run of each scheduled operation (the late-event correction with its reconciliation, the
-- legacy comparison), written by its Dagster asset. PostgreSQL's exporter serves it to Prometheus
-- (deploy/prometheus/postgres_queries.yml), so an alert can tell when one stops running or finds
-- a mismatch, without Dagster's own database being read.
create table if not exists operation_runs (
    operation text primary key,
    finished_at timestamptz not null,
    hour timestamptz,                      -- the hour (partition) it ran for
    events bigint not null default 0,      -- events it folded or compared
    mismatches integer not null default 0  -- cells that did not agree
);
