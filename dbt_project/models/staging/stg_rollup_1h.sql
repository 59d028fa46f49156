with

source_table as (

    select * from {{ source('stream', 'rollup_1h') }}

),

renamed as (

    select
        bucket as hour_start,
        event_type,
        source,
        kafka_partition,
        event_count,
        value_count,
        value_sum,
        value_min,
        value_max,
        users as users_hll,
        final as is_final,
        updated_at

    from source_table

)

select * from renamed
