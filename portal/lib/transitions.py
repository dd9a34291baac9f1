"""Move many rows from one status to another and record each move, in one transaction.

Each app wraps this in one function per model (`mailboxes_transition`, `bookings_transition`,
`wave_transition`), which is the only code that writes a `status` field.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import models, transaction
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
