{#- What the target database can do, decided at run time. The stack's PostgreSQL and a TimescaleDB
    server are both adapter type `postgres` (MetricFlow refuses an adapter type `timescaledb`), so
    adapter.dispatch cannot tell them apart, and a target flag could claim an extension the database
    lacks: the models ask pg_extension instead, once per macro call (a catalog lookup, ~1 ms). -#}

{% macro has_extension(name, at_parse=true) %}
    {#- True when extension `name` is installed in the target database. While dbt parses there is no
        database: `at_parse` is returned then (it only shapes the SQL in the manifest). -#}
    {%- if not execute -%}
        {{ return(at_parse) }}
    {%- endif -%}
    {%- set found = run_query("select 1 from pg_extension where extname = '" ~ name ~ "'") -%}
    {{ return(found.rows | length > 0) }}
{% endmacro %}
