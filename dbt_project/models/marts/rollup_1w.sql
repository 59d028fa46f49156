{{ config(materialized='view') }}

{#- A view: weeks are few, and a view is never behind rollup_1d. -#}

with

days as (

    select * from {{ ref('rollup_1d') }}

),

weeks as (

    select
        date_trunc('week', day)::date as week_start,
        event_type,
        source,
        sum(event_count)::bigint as event_count,
        sum(value_count)::bigint as value_count,
        sum(value_sum) as value_sum,
        min(value_min) as value_min,
        max(value_max) as value_max,
        {{ hll_union('users_hll') }} as users_hll,
        sum(late_count)::bigint as late_count

    from days
    group by 1, 2, 3

),

final as (

    select
        week_start,
        event_type,
        source,
        event_count,
        value_count,
        value_sum,
        value_min,
        value_max,
        users_hll,
        {{ hll_estimate('users_hll') }} as unique_users,
        late_count

    from weeks

)

select * from final
