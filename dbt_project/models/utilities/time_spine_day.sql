{#- One row per UTC day, for MetricFlow (the semantic layer needs a day time spine to fill and offset
    days). Plain generate_series: dbt_utils cannot be installed here. 2020 to 2040 is ~7,300 rows. -#}

with

days as (

    select day::date as date_day
    from generate_series(date '2020-01-01', date '2040-12-31', interval '1 day') as day

)

select * from days
