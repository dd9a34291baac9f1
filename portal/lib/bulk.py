"""Update many rows, each with its own values, in a few statements.

Django's `bulk_update` builds one CASE WHEN per column, whose cost grows with the square of
the batch on SQLite. `UPDATE … FROM (VALUES …)` does the same work as one join, on PostgreSQL
and on SQLite (3.33 and newer).
"""

from collections.abc import Sequence

from django.db import connection, models

from portal.lib.transitions import chunked

MAX_PARAMS = 30_000  # below PostgreSQL's 65,535 and recent SQLite's 32,766


def update_rows(model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence]) -> int:
    """Set `fields` on each row: `rows` holds (pk, value for each field) tuples."""
    if not rows:
        return 0
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    pk = quote(model._meta.pk.column)
    columns = [model._meta.get_field(name) for name in fields]
    names = [quote(field.column) for field in columns]
    postgres = connection.vendor == "postgresql"
    assignments = ", ".join(
        f"{name} = CAST(v.{name} AS {field.db_type(connection)})"
        if postgres
        else f"{name} = v.{name}"
        for name, field in zip(names, columns, strict=True)
    )
    limit = min(connection.features.max_query_params or MAX_PARAMS, MAX_PARAMS)
    per_chunk = max(1, limit // (len(fields) + 1))
    placeholder = "(" + ", ".join(["%s"] * (len(fields) + 1)) + ")"
    updated = 0
    with connection.cursor() as cursor:
        for part in chunked(list(rows), per_chunk):
            params = []
            for row in part:
                params.append(row[0])
                params.extend(
                    field.get_db_prep_save(value, connection)
                    for field, value in zip(columns, row[1:], strict=True)
                )
            cursor.execute(
                f"WITH v({pk}, {', '.join(names)}) AS (VALUES {', '.join([placeholder] * len(part))}) "  # noqa: S608 - names are quoted model columns
                f"UPDATE {table} SET {assignments} FROM v WHERE {table}.{pk} = v.{pk}",
                params,
            )
            updated += cursor.rowcount
    return updated
