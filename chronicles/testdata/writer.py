"""Bulk row writing for the generator: COPY on PostgreSQL, bulk_create elsewhere.

Rows are plain tuples in the order of the sink's attribute names, so generating a
row never builds a model instance on the fast path.
"""

from django.core.management.color import no_style
from django.db import connection


class RowSink:
    """Buffers the rows of one table until the generator flushes a chunk."""

    def __init__(self, model, attnames):
        self.model = model
        self.attnames = tuple(attnames)
        columns = {f.attname: f.column for f in model._meta.concrete_fields}
        self.columns = tuple(columns[name] for name in self.attnames)
        self.rows = []
        self.written = 0

    def add(self, row):
        self.rows.append(row)

    def flush(self):
        if not self.rows:
            return
        if connection.vendor == "postgresql":
            self._copy()
        else:
            self._bulk_create()
        self.written += len(self.rows)
        self.rows = []

    def _copy(self):
        quote = connection.ops.quote_name
        columns = ", ".join(quote(column) for column in self.columns)
        sql = f"COPY {quote(self.model._meta.db_table)} ({columns}) FROM STDIN"
        with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
            for row in self.rows:
                copy.write_row(row)

    def _bulk_create(self):
        objects = [self.model(**dict(zip(self.attnames, row, strict=True))) for row in self.rows]
        self.model.objects.bulk_create(objects, batch_size=500)


def next_id(model):
    """The first free primary key: the generator assigns ids itself to link rows."""
    last = model.objects.order_by("-pk").values_list("pk", flat=True).first()
    return (last or 0) + 1


def reset_sequences(models):
    """Move the id sequences past the ids the generator assigned (PostgreSQL)."""
    statements = connection.ops.sequence_reset_sql(no_style(), models)
    if statements:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
