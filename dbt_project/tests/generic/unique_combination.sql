{#- Fails for each combination of `columns` that appears on more than one row (dbt_utils'
    unique_combination_of_columns, which cannot be installed here: no package hub). -#}
{% test unique_combination(model, columns) %}

select
    {{ columns | join(', ') }},
    count(*) as rows_with_this_combination

from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1

{% endtest %}
