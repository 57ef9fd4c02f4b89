"""Set-based writes of per-row values."""

from django.db.models import Case, F, Value, When


def set_values(queryset, values_by_id, **same_for_all):
    """One UPDATE giving each row of `values_by_id` ({id: {field: value}}) its own
    values, limited to rows `queryset` still selects (the caller's re-check).
    Returns the number of rows updated."""
    if not values_by_id:
        return 0
    fields = {field for values in values_by_id.values() for field in values}
    assignments = {}
    for field in fields:
        whens = [
            When(pk=pk, then=Value(values[field]))
            for pk, values in values_by_id.items()
            if field in values
        ]
        output = queryset.model._meta.get_field(field)
        assignments[field] = Case(*whens, default=F(field), output_field=output)
    return queryset.filter(pk__in=list(values_by_id)).update(**assignments, **same_for_all)
