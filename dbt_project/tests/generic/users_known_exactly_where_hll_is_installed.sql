{#- Fails for each row whose unique users are missing on a database with the `hll` extension, or
    present on one without it (where they cannot be right: macros/hll.sql). Checked at run time, as the
    models choose. A table built before `hll` was installed fails it until a `--full-refresh`. -#}
{% test users_known_exactly_where_hll_is_installed(model) %}

select *
from {{ model }}
{% if has_extension('hll') -%}
where users_hll is null or unique_users is null
{%- else -%}
where users_hll is not null or unique_users is not null
{%- endif %}

{% endtest %}
