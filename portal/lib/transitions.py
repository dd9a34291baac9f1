"""Move many rows from one status to another and record each move, in one transaction.

Each app wraps this in one function per model (`mailboxes_transition`, `bookings_transition`,
`wave_transition`), which is the only code that writes a `status` field.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, models, transaction
from django.utils import timezone

CHUNK = 2000  # below every backend's limit on query parameters


class TransitionNotAllowed(Exception):
    """A status change the rules refuse; the message is fit to show to the user."""


Actor = AbstractBaseUser | str


ACTOR_LABEL_LENGTH = 150  # the events' actor_label field


def actor_fields(actor: Actor) -> dict:
    if isinstance(actor, str):
        return {"actor": None, "actor_label": actor[:ACTOR_LABEL_LENGTH]}
    # A full name can be twice as long as the label (first and last names, 150 each).
    label = actor.get_full_name() or actor.get_username()
    return {"actor": actor, "actor_label": label[:ACTOR_LABEL_LENGTH]}


def chunked(items: Sequence, size: int = CHUNK) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def transition_rows(
    *,
    model: type[models.Model],
    event_model: type[models.Model],
    event_fk: str,
    allowed_from: set[str],
    ids: Sequence[int],
    to: str,
    actor: Actor,
    reason: str = "",
    expected_from: Iterable[str] | None = None,
    updates: dict | None = None,
    at: datetime | None = None,
) -> list[int]:
    """Move the rows among `ids` whose status is allowed to become `to`; return the ids moved.

    Rows are locked (PostgreSQL) or the database is held (SQLite, IMMEDIATE transactions) while
    their current status is read, so each event's `from_status` is exactly what was replaced.
    """
    allowed = set(allowed_from)
    if expected_from is not None:
        allowed &= set(expected_from)
    at = at or timezone.now()
    who = actor_fields(actor)
    if connection.vendor == "postgresql":
        return _transition_rows_in_one_statement(
            model, event_model, event_fk, allowed, ids, to, who, reason, updates or {}, at
        )
    moved: list[int] = []
    with transaction.atomic():
        for chunk in chunked(sorted(set(ids))):
            rows = list(
                model.objects.select_for_update()
                .filter(pk__in=chunk, status__in=allowed)
                .order_by("pk")
                .values_list("pk", "status")
            )
            if not rows:
                continue
            pks = [pk for pk, _ in rows]
            model.objects.filter(pk__in=pks).update(
                status=to, status_changed_at=at, **(updates or {})
            )
            event_model.objects.bulk_create(
                [
                    event_model(
                        **{f"{event_fk}_id": pk},
                        at=at,
                        from_status=from_status,
                        to_status=to,
                        reason=reason[:500],
                        **who,
                    )
                    for pk, from_status in rows
                ],
                batch_size=CHUNK,
            )
            moved.extend(pks)
    return moved


def _transition_rows_in_one_statement(
    model, event_model, event_fk, allowed, ids, to, who, reason, updates, at
) -> list[int]:
    """PostgreSQL: lock, move and record every row in one statement, whatever their number.

    The same steps as the portable loop, done by the database: rows are locked in id order,
    each event's `from_status` is the status its row had when locked, and nothing passes through
    Python but the ids. An 81,000-mailbox poll cycle is then one round trip, not 120.
    """
    quote = connection.ops.quote_name
    table, events = quote(model._meta.db_table), quote(event_model._meta.db_table)
    pk = quote(model._meta.pk.column)
    column = {name: quote(model._meta.get_field(name).column) for name in ["status", *updates]}
    sets = [
        f"{column['status']} = %(to)s",
        f"{quote(model._meta.get_field('status_changed_at').column)} = %(at)s",
    ]
    params = {"ids": sorted(set(ids)), "allowed": sorted(allowed), "to": to, "at": at}
    for i, (name, value) in enumerate(updates.items()):
        field = model._meta.get_field(name)
        sets.append(f"{column[name]} = %(update_{i})s")
        params[f"update_{i}"] = field.get_db_prep_save(value, connection)
    event = {
        name: quote(event_model._meta.get_field(name).column)
        for name in [event_fk, "at", "from_status", "to_status", "reason", "actor", "actor_label"]
    }
    actor = who["actor"]
    params |= {
        "reason": reason[:500],
        "actor": None if actor is None else actor.pk,
        "actor_label": who["actor_label"],
    }
    sql = f"""
        WITH locked AS (
            SELECT {pk} AS id, {column["status"]} AS status FROM {table}
            WHERE {pk} = ANY(%(ids)s) AND {column["status"]} = ANY(%(allowed)s)
            ORDER BY {pk} FOR UPDATE
        ), moved AS (
            UPDATE {table} SET {", ".join(sets)} FROM locked WHERE {table}.{pk} = locked.id
            RETURNING locked.id, locked.status
        )
        INSERT INTO {events} ({event[event_fk]}, {event["at"]}, {event["from_status"]},
            {event["to_status"]}, {event["reason"]}, {event["actor"]}, {event["actor_label"]})
        SELECT id, %(at)s, status, %(to)s, %(reason)s, %(actor)s, %(actor_label)s
        FROM moved ORDER BY id
        RETURNING {event[event_fk]}
    """  # noqa: S608 - names are quoted from the models; every value is a parameter
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return sorted(row[0] for row in cursor.fetchall())
