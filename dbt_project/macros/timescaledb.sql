{#- TimescaleDB, where the target database has it (see has_extension: the adapter type is `postgres`
    on both, so the dispatch below separates adapters and the run-time check separates databases). -#}

{% macro hypertable(time_column, chunk_interval) -%}
    {#- A post-hook: makes the model's table a hypertable on `time_column` where the `timescaledb`
        extension is installed, and nothing elsewhere. Rows already in the table move into chunks
        (migrate_data: a full refresh builds a plain table and swaps it in); a table that already is
        one is left as it is (if_not_exists), so every incremental run can call it. -#}
    {{- return(adapter.dispatch('hypertable', 'tally')(time_column, chunk_interval)) -}}
{%- endmacro %}

{% macro default__hypertable(time_column, chunk_interval) -%}
    {#- No TimescaleDB outside PostgreSQL: an empty hook, which dbt skips. -#}
{%- endmacro %}

{% macro postgres__hypertable(time_column, chunk_interval) -%}
    {%- if has_extension('timescaledb', at_parse=false) -%}
        select create_hypertable(
            '{{ this.include(database=false) }}',
            by_range('{{ time_column }}', interval '{{ chunk_interval }}'),
            if_not_exists => true,
            migrate_data => true
        )
    {%- endif -%}
{%- endmacro %}
