"""Write many rows, each with its own values, in a few statements.

Django's `bulk_update` builds one CASE WHEN per column, whose cost grows with the square of
the batch on SQLite. `UPDATE … FROM (VALUES …)` does the same work as one join, on SQLite
(3.33 and newer); on PostgreSQL each column travels as one array and `unnest` makes the rows,
so 80,000 rows are one statement with a handful of parameters. `insert_rows` does the same for
`bulk_create`, whose cost at that size is mostly building model instances.
"""

from collections.abc import Sequence

from django.db import connection, models

from portal.lib.transitions import CHUNK, chunked

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
    if connection.vendor == "postgresql":
        arrays = [[row[0] for row in rows]] + [
            _prepared(field, [row[i] for row in rows]) for i, field in enumerate(columns, 1)
        ]
        types = [model._meta.pk.db_type(connection)] + [f.db_type(connection) for f in columns]
        sets = ", ".join(f"{name} = v.{name}" for name in names)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET {sets} FROM {_unnest(types)} AS v({pk}, {', '.join(names)})"  # noqa: S608 - names are quoted model columns
                f" WHERE {table}.{pk} = v.{pk}",
                arrays,
            )
            return cursor.rowcount
    assignments = ", ".join(f"{name} = v.{name}" for name in names)
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


def _prepared(field: models.Field, values: list) -> list:
    """Each value as the database takes it; each distinct value prepared once (a poll's 80,000
    rows share a handful of statuses and one time, and preparing a datetime is not cheap).
    Whole numbers for integer columns go as they are, as Django's preparation would leave them."""
    if isinstance(field, models.IntegerField) and all(type(value) is int for value in values):
        return values
    done: dict = {}
    prepared = []
    for value in values:
        try:
            prepared.append(done[value])
        except KeyError:
            done[value] = field.get_db_prep_save(value, connection)
            prepared.append(done[value])
        except TypeError:  # unhashable: prepared each time
            prepared.append(field.get_db_prep_save(value, connection))
    return prepared


def _unnest(types: Sequence[str]) -> str:
    return "unnest(" + ", ".join(f"%s::{db_type}[]" for db_type in types) + ")"


def insert_rows(
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence], **same
) -> None:
    """Insert one row per entry of `rows` (values of `fields`); other fields from `same`, or
    their defaults. No instances are built; on other databases than PostgreSQL, `bulk_create`."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        attnames = [model._meta.get_field(name).attname for name in fields]  # mailbox → mailbox_id
        model.objects.bulk_create(
            [model(**dict(zip(attnames, row, strict=True)), **same) for row in rows],
            batch_size=CHUNK,
        )
        return
    quote = connection.ops.quote_name
    template = model(**same)  # the defaults and the values every row shares
    varying = [model._meta.get_field(name) for name in fields]
    shared = [
        field
        for field in model._meta.concrete_fields
        if not field.primary_key and field not in varying
    ]
    columns = ", ".join(quote(field.column) for field in [*varying, *shared])
    shared_values = [
        field.get_db_prep_save(getattr(template, field.attname), connection) for field in shared
    ]
    arrays = [_prepared(field, [row[i] for row in rows]) for i, field in enumerate(varying)]
    select = ", ".join(["v.*", *["%s"] * len(shared)])
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(model._meta.db_table)} ({columns})"  # noqa: S608 - quoted names
            f" SELECT {select} FROM {_unnest([f.db_type(connection) for f in varying])} AS v",
            [*shared_values, *arrays],
        )
