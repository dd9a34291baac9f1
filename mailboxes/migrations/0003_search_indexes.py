"""The trigram index for searching mailboxes by a fragment of their name, on PostgreSQL.

`pg_trgm` GIN on UPPER(display_name): `display_name__icontains`, which Django writes as
`UPPER(display_name::text) LIKE UPPER('%…%')`, finds a name fragment without reading every row.

Prefixes of addresses and UPNs need no new index: Django already gives each unique text column
a `varchar_pattern_ops` index, which serves LIKE 'prefix%' and, read in order, the first rows
of a prefix (see `mailboxes.selectors`); exact look-ups use the unique indexes.

Built CONCURRENTLY, so adding it to a live table blocks neither imports nor the engine (the
migration is therefore not atomic). On SQLite, the embedded default, this migration does
nothing: the selectors' plain look-ups are fast enough at demo sizes.
"""

from django.db import migrations

INDEXES = {
    "mailbox_display_name_trgm": (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS mailbox_display_name_trgm"
        " ON mailboxes_mailbox USING gin (UPPER(display_name) gin_trgm_ops)"
    ),
}


def create_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for statement in INDEXES.values():
        schema_editor.execute(statement)


def drop_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [("mailboxes", "0002_importrun")]

    operations = [migrations.RunPython(create_indexes, drop_indexes, elidable=False)]
