{#- Tag `daily`: the orchestrator partitions this model by UTC day and passes vars min_day/max_day.

    Where TimescaleDB is installed the table becomes a hypertable on `day` (macros/timescaledb.sql),
    not a continuous aggregate: a continuous aggregate cannot hold this model (it takes inner and left
    joins only, not the full join with late events below; a refresh over days whose hours were
    dropped empties them, where this model keeps them), and dbt has no materialization for one, so
    the contract, the tests, the look-back and the exact day windows would all be rebuilt by hand.
    A hypertable keeps this SQL and its meaning on both databases and adds chunks by day: range
    queries skip old chunks, which can be compressed or dropped whole. 30-day chunks: a run rewrites
    the last few days (lookback_days), so only the newest chunk or two ever change. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='day',
        on_schema_change='fail',
        tags=['daily'],
        post_hook=["{{ hypertable('day', '30 days') }}"],
    )
}}

{#- See macros/day_window.sql: which days this run rebuilds. -#}
{%- set window = day_window() -%}

with

hours as (

    select * from {{ ref('stg_rollup_1h') }}
    where {{ in_day_window('hour_start', window) }}

),

late_events as (

    select * from {{ ref('stg_late_events') }}
    where not is_folded
        and {{ in_day_window('minute_start', window) }}

),

hours_per_day as (

    -- Sums over hours and over Kafka partitions alike: each partition has its own row.
    select
        {{ utc_day('hour_start') }} as day,
        event_type,
        source,
        sum(event_count)::bigint as event_count,
        sum(value_count)::bigint as value_count,
        sum(value_sum) as value_sum,
        min(value_min) as value_min,
        max(value_max) as value_max,
        {{ hll_union('users_hll') }} as users_hll

    from hours
    group by 1, 2, 3

),

late_per_day as (

    select
        {{ utc_day('minute_start') }} as day,
        event_type,
        source,
        count(*)::bigint as late_count

    from late_events
    group by 1, 2, 3

),

joined as (

    -- A full join: a day, event type and source may so far have only late events.
    select
        day,
        event_type,
        source,
        coalesce(hours_per_day.event_count, 0) as event_count,
        coalesce(hours_per_day.value_count, 0) as value_count,
        coalesce(hours_per_day.value_sum, 0) as value_sum,
        hours_per_day.value_min,
        hours_per_day.value_max,
        -- A day of late events only has seen no user in its hours: an empty sketch, 0 users.
        coalesce(hours_per_day.users_hll, {{ hll_empty_bytea() }}) as users_hll,
        coalesce(late_per_day.late_count, 0) as late_count

    from hours_per_day
    full outer join late_per_day using (day, event_type, source)

),

final as (

    -- Unique users are null where the database has no `hll` extension (macros/hll.sql), never a guess.
    select
        day,
        event_type,
        source,
        event_count,
        value_count,
        value_sum,
        value_min,
        value_max,
        users_hll,
        {{ hll_estimate('users_hll') }} as unique_users,
        late_count,
        now() as built_at

    from joined

)

select * from final
