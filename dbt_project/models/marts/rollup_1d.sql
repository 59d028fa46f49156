{#- Tag `daily`: the orchestrator partitions this model by UTC day and passes vars min_day/max_day. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='day',
        on_schema_change='fail',
        tags=['daily'],
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

final as (

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
        coalesce(hours_per_day.users_hll, {{ hll_empty_bytea() }}) as users_hll,
        coalesce({{ hll_estimate('hours_per_day.users_hll') }}, 0) as unique_users,
        coalesce(late_per_day.late_count, 0) as late_count,
        now() as built_at

    from hours_per_day
    full outer join late_per_day using (day, event_type, source)

)

select * from final
