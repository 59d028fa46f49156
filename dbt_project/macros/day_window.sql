{#- Which UTC days a run of a daily model rebuilds. Returns {'start': sql, 'end': sql}, two SQL date
    expressions, either of which may be none (unbounded):
    - vars min_day and max_day given (ISO dates, max_day exclusive): exactly [min_day, max_day), the
      window an orchestrator asks for when it (re)builds day partitions;
    - an incremental run without them: from the newest day already built (capped at today, so a stray
      future row cannot push the window past the real days) minus var lookback_days, open-ended: late
      corrections rewrite old hour rows, and the days they touch are rebuilt;
    - a first build or --full-refresh: every day.
    A day is replaced only by rows of its own: one whose source rows are all gone (dropped by a
    retention policy, say) keeps the daily rows it had, which is what a daily rollup is kept for. -#}
{% macro day_window() %}
    {%- set min_day = var('min_day', none) -%}
    {%- set max_day = var('max_day', none) -%}
    {%- if (min_day is none) != (max_day is none) -%}
        {{ exceptions.raise_compiler_error("give both vars min_day and max_day (ISO dates, max_day exclusive) or neither, got min_day=" ~ min_day ~ ", max_day=" ~ max_day) }}
    {%- endif -%}
    {%- if min_day is not none -%}
        {%- set first = parse_iso_day(min_day, 'min_day') -%}
        {%- set last = parse_iso_day(max_day, 'max_day') -%}
        {%- if first >= last -%}
            {{ exceptions.raise_compiler_error("min_day " ~ first ~ " must be before max_day " ~ last ~ " (max_day is exclusive)") }}
        {%- endif -%}
        {{ return({'start': "date '" ~ first ~ "'", 'end': "date '" ~ last ~ "'"}) }}
    {%- elif is_incremental() -%}
        {%- set start -%}
            (select least(max(day), {{ utc_today() }}) - {{ var('lookback_days') | int }} from {{ this }})
        {%- endset -%}
        {{ return({'start': start, 'end': none}) }}
    {%- else -%}
        {{ return({'start': none, 'end': none}) }}
    {%- endif -%}
{% endmacro %}

{% macro parse_iso_day(value, name) %}
    {#- The date an ISO string names, or a clear error (the value goes into SQL). -#}
    {%- set text = value | string -%}
    {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', text) -%}
        {{ exceptions.raise_compiler_error("var " ~ name ~ " must be an ISO date like 2026-11-30, got " ~ text) }}
    {%- endif -%}
    {{ return(modules.datetime.date.fromisoformat(text)) }}
{% endmacro %}

{% macro in_day_window(time_column, window) -%}
    {#- A predicate: `time_column` (timestamptz) falls on a day of the window. Compared as timestamps,
        so an index on the column serves it. -#}
    {%- if window.start is none and window.end is none -%}
        true
    {%- else -%}
        {%- if window.start is not none -%}
            {{ time_column }} >= ({{ window.start }})::timestamp at time zone 'UTC'
        {%- endif -%}
        {%- if window.start is not none and window.end is not none %} and {% endif -%}
        {%- if window.end is not none -%}
            {{ time_column }} < ({{ window.end }})::timestamp at time zone 'UTC'
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{% macro utc_day(time_column) -%}
    ({{ time_column }} at time zone 'UTC')::date
{%- endmacro %}

{% macro utc_today() -%}
    (now() at time zone 'UTC')::date
{%- endmacro %}
