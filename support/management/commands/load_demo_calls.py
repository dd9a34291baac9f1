"""Helpdesk calls for the demo, after `load_demo_data`: some resolved, some to follow up.

A command of its own because the demo data is loaded by `waves`, which may not import
`support` (dependencies point one way: support reads mailboxes and waves).
"""

import random
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from mailboxes.models import Mailbox, MailboxStatus
from support.models import HelpdeskCall
from support.services import helpdesk_call_record

# What callers asked, by the status of their mailbox: (summary, resolved on the call).
CALLS = {
    MailboxStatus.SYNCED: [
        ("Asked when her mailbox moves. Gave the cutover time from the wave.", True),
        ("Worried about losing mail during the move. Explained the final sync.", True),
    ],
    MailboxStatus.SCHEDULED: [
        ("Going on leave the night of the move: asked if anything is needed. Nothing is.", True),
        ("Manager asked to move the whole team later. Passed to the trust's IT lead.", False),
    ],
    MailboxStatus.COMPLETED: [
        ("Cannot see the shared calendar since the move. Escalated to the trust's IT lead.", False),
        ("Outlook on the phone asks for the password again. Talked through signing in.", True),
        ("Missing a folder of archived mail. Checking the move's skipped items.", False),
    ],
    MailboxStatus.NOT_SCHEDULED: [
        ("Asked when their practice is booked. Not booked yet: gave the IT lead's name.", True),
    ],
}
SEED = 2021


class Command(BaseCommand):
    help = "Record demo helpdesk calls (after load_demo_data); does nothing if there are calls."

    def handle(self, *args, **options) -> None:
        helpdesk = get_user_model().objects.filter(username="helpdesk").first()
        if helpdesk is None:
            raise CommandError("No demo helpdesk user: run load_demo_data first.")
        if HelpdeskCall.objects.exists():
            self.stdout.write("Demo calls already recorded.")
            return
        rng = random.Random(SEED)  # noqa: S311 - demo data
        now = timezone.now()
        recorded = 0
        for status, calls in CALLS.items():
            ids = list(Mailbox.objects.filter(status=status).values_list("pk", flat=True)[:200])
            picked = rng.sample(ids, min(len(calls), len(ids)))  # fewer if few in that status
            for (summary, resolved), pk in zip(calls, picked, strict=False):
                call = helpdesk_call_record(
                    mailbox=Mailbox.objects.get(pk=pk),
                    recorded_by=helpdesk,
                    summary=summary,
                    resolved=resolved,
                )
                # Spread over the last two days, as calls come in (recorded_at is set on save).
                at = now - timedelta(minutes=rng.randrange(60, 60 * 48))
                HelpdeskCall.objects.filter(pk=call.pk).update(
                    recorded_at=at, resolved_at=at if resolved else None
                )
                recorded += 1
        waiting = HelpdeskCall.objects.filter(resolved=False).count()
        self.stdout.write(f"Recorded {recorded} demo calls, {waiting} to follow up.")
