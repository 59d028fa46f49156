{#- Fails for each row where `expression` is false (a null result passes: e.g. value_min <= value_max
    on a row without values). dbt_utils' test of the same name, which cannot be installed here. -#}
{% test expression_is_true(model, expression) %}

select *
from {{ model }}
where not ({{ expression }})

{% endtest %}
