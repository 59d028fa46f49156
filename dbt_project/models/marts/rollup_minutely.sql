{{ config(materialized='view') }}

{#- A view, so the semantic layer answers from the stream's latest rows (open minutes included). -#}

with

minutes as (

    select * from {{ ref('stg_rollup_1m') }}

),

minutes_over_partitions as (

    select
        minute_start,
        event_type,
        source,
        sum(event_count)::bigint as event_count,
        sum(value_count)::bigint as value_count,
        sum(value_sum) as value_sum,
        min(value_min) as value_min,
        max(value_max) as value_max,
        {{ hll_union('users_hll') }} as users_hll,
        bool_and(is_final) as is_final

    from minutes
    group by 1, 2, 3

),

final as (

    select
        minute_start,
        event_type,
        source,
        event_count,
        value_count,
        value_sum,
        value_min,
        value_max,
        users_hll,
        {{ hll_estimate('users_hll') }} as unique_users,
        is_final

    from minutes_over_partitions

)

select * from final
