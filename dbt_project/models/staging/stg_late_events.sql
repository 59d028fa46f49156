with

source_table as (

    select * from {{ source('stream', 'late_events') }}

),

renamed as (

    select
        event_id,
        bucket as minute_start,
        event_type,
        source,
        kafka_partition,
        event as event_json,
        arrived_at,
        folded_at,
        folded_at is not null as is_folded,
        duplicate as is_duplicate

    from source_table

)

select * from renamed
