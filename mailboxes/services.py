"""Writes to organisations and mailboxes."""

from collections.abc import Iterable, Sequence

from mailboxes.models import MAILBOX_TRANSITIONS, Mailbox, MailboxEvent, MailboxStatus
from portal.lib.transitions import Actor, transition_rows


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
