{#- Unique-user sketches. The stream stores them as bytea in the `hll` extension's storage format;
    the marts keep that format, so every rollup table is read the same way: `users_hll::hll`. -#}

{% macro hll_union(sketch_column) -%}
    {#- Merge a column of sketches (an aggregate) into one sketch, as bytea. The extension has a cast
        from bytea to hll but none back; its text form is the same bytes as `\x` + hex. -#}
    decode(substr(hll_union_agg(({{ sketch_column }})::hll)::text, 3), 'hex')
{%- endmacro %}

{% macro hll_empty_bytea() -%}
    {#- An empty sketch with the extension's default parameters (which are the stream's, tally/sketch.py). -#}
    decode(substr(hll_empty()::text, 3), 'hex')
{%- endmacro %}

{% macro hll_estimate(sketch) -%}
    {#- The estimated number of distinct users in one sketch (bytea), rounded to a whole number. -#}
    round(hll_cardinality(({{ sketch }})::hll))::bigint
{%- endmacro %}
