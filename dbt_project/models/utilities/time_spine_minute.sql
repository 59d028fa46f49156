{{ config(materialized='view') }}

{#- One row per UTC minute, for MetricFlow questions at minute grain. A view over the minutes the
    stream holds (first to last day of stg_rollup_1m, found through its index), so it stores nothing
    and grows with the data: a fixed span of years would be millions of rows. -#}

with

span as (

    select
        date_trunc('day', min(minute_start) at time zone 'UTC') as first_minute,
        date_trunc('day', max(minute_start) at time zone 'UTC') + interval '1 day' - interval '1 minute' as last_minute

    from {{ ref('stg_rollup_1m') }}

),

minutes as (

    select minute_utc
    from span, generate_series(span.first_minute, span.last_minute, interval '1 minute') as minute_utc

)

select * from minutes
