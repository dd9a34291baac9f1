"""Reads for the helpdesk: one mailbox's whole story."""

from mailboxes.models import Mailbox
from support.models import HelpdeskCall
from waves.selectors import mailbox_migration


def mailbox_story(mailbox: Mailbox) -> dict:
    return {
        "mailbox": mailbox,
        "migration": mailbox_migration(mailbox),
        "timeline": list(mailbox.events.order_by("-at", "-id")),
        "calls": list(HelpdeskCall.objects.filter(mailbox=mailbox).select_related("recorded_by")),
    }
