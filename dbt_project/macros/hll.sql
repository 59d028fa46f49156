{#- Unique-user sketches. The stream stores them as bytea in the `hll` extension's storage format;
    the marts keep that format, so every rollup table is read the same way: `users_hll::hll`.

    Only the `hll` extension can merge or count them. On a database without it (TimescaleDB in PGlite,
    the conformance target) these macros give null, checked at run time (has_extension): the marts
    still build, and their unique users are unknown rather than a wrong number. -#}

{% macro hll_union(sketch_column) -%}
    {#- Merge a column of sketches (an aggregate) into one sketch, as bytea. The extension has a cast
        from bytea to hll but none back; its text form is the same bytes as `\x` + hex. -#}
    {%- if has_extension('hll') -%}
        decode(substr(hll_union_agg(({{ sketch_column }})::hll)::text, 3), 'hex')
    {%- else -%}
        null::bytea
    {%- endif -%}
{%- endmacro %}

{% macro hll_empty_bytea() -%}
    {#- An empty sketch with the extension's default parameters (which are the stream's, tally/sketch.py). -#}
    {%- if has_extension('hll') -%}
        decode(substr(hll_empty()::text, 3), 'hex')
    {%- else -%}
        null::bytea
    {%- endif -%}
{%- endmacro %}

{% macro hll_estimate(sketch) -%}
    {#- The estimated number of distinct users in one sketch (bytea), rounded to a whole number. -#}
    {%- if has_extension('hll') -%}
        round(hll_cardinality(({{ sketch }})::hll))::bigint
    {%- else -%}
        null::bigint
    {%- endif -%}
{%- endmacro %}
