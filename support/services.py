"""Writes for the helpdesk."""

from django.db import transaction
from django.template.defaultfilters import date
from django.utils import timezone

from mailboxes.models import Mailbox
from support.models import HelpdeskCall


class CallAlreadyResolved(Exception):
    """The call was marked resolved before: by whom and when is in the message."""


def helpdesk_call_record(
    *, mailbox: Mailbox, recorded_by, summary: str, resolved: bool
) -> HelpdeskCall:
    return HelpdeskCall.objects.create(
        mailbox=mailbox,
        recorded_by=recorded_by,
        summary=summary.strip(),
        resolved=resolved,
        resolved_at=timezone.now() if resolved else None,
        resolved_by=recorded_by if resolved else None,
    )


def helpdesk_call_resolve(*, call_id: int, actor) -> HelpdeskCall:
    """Mark a call followed up and resolved, by `actor`, now; once only. HelpdeskCall.DoesNotExist
    if there is no such call.

    The row is locked while it is checked, so two people pressing at once resolve it once and
    the second is told who did.
    """
    with transaction.atomic():
        call = (
            HelpdeskCall.objects.select_for_update(of=("self",))
            .select_related("mailbox", "resolved_by")
            .get(pk=call_id)
        )
        if call.resolved:
            who = call.resolved_by.get_full_name() or call.resolved_by.username
            when = date(timezone.localtime(call.resolved_at), "j M Y, H:i T")
            raise CallAlreadyResolved(f"This call was already marked resolved ({who}, {when}).")
        call.resolved, call.resolved_at, call.resolved_by = True, timezone.now(), actor
        call.save(update_fields=["resolved", "resolved_at", "resolved_by"])
    return call
