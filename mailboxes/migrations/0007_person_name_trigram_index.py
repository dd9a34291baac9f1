"""Name search reads the person's part of the display name: its own trigram index, on PostgreSQL.

The index of migration 0003 held the trigrams of the whole display name, organisation included
("JOHNSON, Michelle (LEEDS TEACHING HOSPITALS NHS TRUST)": 48 characters on average, 13 of them
the person's). This one is on `UPPER(split_part(display_name, ' (', 1))`, which is what
`mailboxes.selectors.PersonName` with `icontains` compiles to, so the planner can use it. At
2.1 million mailboxes it builds in 7.6 s instead of 23.6 s (see docs/performance.md).

Built CONCURRENTLY, the new one before the old one is dropped, so search keeps an index
throughout and neither blocks imports nor the engine (the migration is therefore not atomic).
The table is then analysed: the planner knows how rare a fragment is in an expression only from
the statistics ANALYZE gathers for an index on it, and without them it read all 2.1 million
rows for a name. On SQLite it does nothing.
"""

from django.db import migrations

NEW = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS mailbox_person_name_trgm ON mailboxes_mailbox"
    " USING gin (UPPER(split_part(display_name, ' (', 1)) gin_trgm_ops)"
)
OLD = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS mailbox_display_name_trgm ON mailboxes_mailbox"
    " USING gin (UPPER(display_name) gin_trgm_ops)"
)


def person_name_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(NEW)
    schema_editor.execute("DROP INDEX CONCURRENTLY IF EXISTS mailbox_display_name_trgm")
    schema_editor.execute("ANALYZE mailboxes_mailbox")


def display_name_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(OLD)
    schema_editor.execute("DROP INDEX CONCURRENTLY IF EXISTS mailbox_person_name_trgm")
    schema_editor.execute("ANALYZE mailboxes_mailbox")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [("mailboxes", "0006_no_index_on_event_actor")]

    operations = [migrations.RunPython(person_name_index, display_name_index, elidable=False)]
