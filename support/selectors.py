"""Reads for the helpdesk: one mailbox's whole story, and the calls to follow up."""

from django.db.models import QuerySet

from mailboxes.models import Mailbox
from support.models import HelpdeskCall
from waves.selectors import mailbox_migration


def mailbox_story(mailbox: Mailbox) -> dict:
    return {
        "mailbox": mailbox,
        "migration": mailbox_migration(mailbox),
        "timeline": list(mailbox.events.order_by("-at", "-id")),
        "calls": list(
            HelpdeskCall.objects.filter(mailbox=mailbox).select_related(
                "recorded_by", "resolved_by"
            )
        ),
    }


def calls_to_follow_up() -> QuerySet[HelpdeskCall]:
    """Calls not yet resolved, oldest first: the helpdesk's list of callers to get back to."""
    return (
        HelpdeskCall.objects.filter(resolved=False)
        .select_related("mailbox__organisation", "recorded_by")
        .order_by("recorded_at", "pk")
    )
