"""Set-based writes of per-row values."""

from django.db import connections
from django.db.models import Case, F, QuerySet, Value, When
from django.db.models.expressions import RawSQL
from django.db.models.sql import UpdateQuery


def set_values(queryset: QuerySet, values_by_id: dict, **same_for_all) -> int:
    """One UPDATE giving each row of `values_by_id` ({id: {field: value}}) its own
    values, limited to rows `queryset` still selects (the caller's re-check).
    Returns the number of rows updated."""
    if not values_by_id:
        return 0
    if connections[queryset.db].vendor == "postgresql":
        return _update_from_arrays(queryset, values_by_id, same_for_all)
    return _update_with_case(queryset, values_by_id, same_for_all)


def _fields(values_by_id):
    return sorted({field for values in values_by_id.values() for field in values})


def _update_with_case(queryset, values_by_id, same_for_all):
    """CASE WHEN id = ... per row: portable, but each row compares with every id, which
    only small batches can afford (SQLite's)."""
    assignments = {}
    for field in _fields(values_by_id):
        whens = [
            When(pk=pk, then=Value(values[field]))
            for pk, values in values_by_id.items()
            if field in values
        ]
        output = queryset.model._meta.get_field(field)
        assignments[field] = Case(*whens, default=F(field), output_field=output)
    return queryset.filter(pk__in=list(values_by_id)).update(**assignments, **same_for_all)


def _update_from_arrays(queryset, values_by_id, same_for_all):
    """PostgreSQL: UPDATE ... FROM unnest(one array per column) joined on the id, so each
    row finds its values by one join, whatever the batch's size; the statement's text
    (and so its plan) does not grow with the batch. The re-check is the WHERE that
    Django writes for `queryset`, applied to the joined rows."""
    connection = connections[queryset.db]
    columns = _Columns(queryset.model._meta, connection, values_by_id)
    query = queryset.query.chain(UpdateQuery)
    query.add_update_values({**columns.assignments, **same_for_all})
    update_sql, params = query.get_compiler(queryset.db).as_sql()
    # Django writes UPDATE t SET ... [WHERE ...]; the values join in between.
    head, where = update_sql.split(" WHERE ", 1) if " WHERE " in update_sql else (update_sql, "")
    set_params = head.count("%s")
    statement = f"{head} FROM {columns.source} WHERE {columns.join}" + (
        f" AND ({where})" if where else ""
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, (*params[:set_params], *columns.arrays, *params[set_params:]))
        return cursor.rowcount


class _Columns:
    """The values of an UPDATE as unnest(...) AS v(id, field, ...): one array per column
    (cast to the column's type), and what each field is set to."""

    def __init__(self, meta, connection, values_by_id):
        self.connection = connection
        self.quote = connection.ops.quote_name
        self.table, pk = self.quote(meta.db_table), meta.pk
        self.names, self.casts, self.arrays, self.assignments = [], [], [], {}
        self._add(pk, list(values_by_id))
        self.join = f"{self.table}.{self.quote(pk.column)} = v.{self.quote(pk.column)}"
        rows = list(values_by_id.values())
        for name in _fields(values_by_id):
            field = meta.get_field(name)
            self._add(field, [field.get_db_prep_save(v.get(name), connection) for v in rows])
            value = f"v.{self.quote(field.column)}"
            if any(name not in values for values in rows):
                # Rows that do not change this field keep their own value.
                flag = field.column + "__set"
                self._add(None, [name in values for values in rows], column=flag)
                value = (
                    f"CASE WHEN v.{self.quote(flag)} THEN {value} "
                    f"ELSE {self.table}.{self.quote(field.column)} END"
                )
            self.assignments[name] = RawSQL(value, (), output_field=field)

    def _add(self, field, array, column=None):
        self.names.append(column or field.column)
        kind = "boolean" if field is None else field.cast_db_type(self.connection)
        self.casts.append(f"%s::{kind}[]")
        self.arrays.append(array)

    @property
    def source(self):
        aliases = ", ".join(self.quote(name) for name in self.names)
        return f"unnest({', '.join(self.casts)}) AS v({aliases})"
