with

source_table as (

    select * from {{ source('stream', 'stream_offsets') }}

),

renamed as (

    select
        topic,
        kafka_partition,
        next_offset,
        watermark,
        updated_at

    from source_table

)

select * from renamed
