"""Writes to organisations and mailboxes."""

from collections.abc import Iterable, Sequence

from django.db.models import Count
from django.utils import timezone

from mailboxes.models import (
    IMPORT_RUN_TRANSITIONS,
    MAILBOX_TRANSITIONS,
    ImportRun,
    ImportRunEvent,
    ImportStatus,
    Mailbox,
    MailboxEvent,
    MailboxStatus,
    StatusCount,
)
from portal.lib.transitions import Actor, transition_rows

IMPORT_WORKER = "Import worker"


def mailboxes_transition(
    *,
    mailbox_ids: Sequence[int],
    to: MailboxStatus,
    actor: Actor,
    reason: str = "",
    expected_from: Iterable[MailboxStatus] | None = None,
) -> list[int]:
    """Move mailboxes to `to` where the rules allow it; return the ids that moved.

    Mailboxes whose current status may not become `to` are left alone: the caller decides
    whether fewer than asked is an error (a poll seeing a status twice is not).
    """
    return transition_rows(
        model=Mailbox,
        event_model=MailboxEvent,
        event_fk="mailbox",
        allowed_from=MAILBOX_TRANSITIONS[to],
        ids=mailbox_ids,
        to=to,
        actor=actor,
        reason=reason,
        expected_from=expected_from,
    )


def import_run_transition(
    *,
    run_id: int,
    to: ImportStatus,
    reason: str,
    expected_from: Iterable[ImportStatus] | None = None,
    actor: Actor = IMPORT_WORKER,
    **updates,
) -> bool:
    """Move an import run to `to` if the rules allow it from its status now; True if it moved.

    `updates` are written in the same statement (its report, when it finishes). A worker
    claims a queued run with `expected_from={QUEUED}`: of two workers given the same task, one
    moves it and the other is told it did not.
    """
    return bool(
        transition_rows(
            model=ImportRun,
            event_model=ImportRunEvent,
            event_fk="run",
            allowed_from=IMPORT_RUN_TRANSITIONS[to],
            ids=[run_id],
            to=to,
            actor=actor,
            reason=reason,
            expected_from=expected_from,
            updates=updates,
        )
    )


def programme_count() -> dict[str, int]:
    """Count every mailbox by status, in one pass, and keep the counts (StatusCount) with the
    time; returns them, every status, 0 where none."""
    counts = dict.fromkeys(MailboxStatus.values, 0)
    counts.update(Mailbox.objects.order_by().values_list("status").annotate(n=Count("pk")))
    now = timezone.now()
    # One row per status, written over in one statement: two counts at once cannot collide.
    StatusCount.objects.bulk_create(
        [StatusCount(status=status, mailboxes=n, counted_at=now) for status, n in counts.items()],
        update_conflicts=True,
        unique_fields=["status"],
        update_fields=["mailboxes", "counted_at"],
    )
    return counts
