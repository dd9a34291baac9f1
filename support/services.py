"""Writes for the helpdesk."""

from mailboxes.models import Mailbox
from support.models import HelpdeskCall


def helpdesk_call_record(
    *, mailbox: Mailbox, recorded_by, summary: str, resolved: bool
) -> HelpdeskCall:
    return HelpdeskCall.objects.create(
        mailbox=mailbox, recorded_by=recorded_by, summary=summary.strip(), resolved=resolved
    )
