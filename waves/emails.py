"""Emails to an organisation's IT leads when their booking is decided, withdrawn or done.

Sent by a worker (`waves.tasks.email_booking`), queued when the change commits, so a slow mail
server never holds up the central team's approval or a wave's finish, and a refused send is
retried by the task queue. Without PORTAL_EMAIL_HOST the messages go to the worker's log.
"""

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import Q
from django.template.defaultfilters import filesizeformat, pluralize
from django.template.loader import render_to_string
from django.urls import reverse
from django_q.tasks import async_task

from mailboxes.models import MailboxStatus
from waves.models import Booking, BookingStatus
from waves.selectors import booking_status_counts

log = logging.getLogger(__name__)
B = BookingStatus
EMAILED = {B.APPROVED, B.REJECTED, B.WITHDRAWN, B.DONE}
SUBJECTS = {B.APPROVED: "Approved", B.REJECTED: "Not approved", B.WITHDRAWN: "Withdrawn"}


def email_soon(booking_ids: list[int], status: BookingStatus) -> None:
    """Queue an email about each booking's move to `status`, once this transaction commits."""
    if status not in EMAILED:
        return
    for booking_id in booking_ids:
        transaction.on_commit(
            lambda booking_id=booking_id: async_task(
                "waves.tasks.email_booking",
                booking_id,
                str(status),
                task_name=f"email-booking-{booking_id}-{status}",
            )
        )


def booking_email(booking_id: int, status: BookingStatus) -> EmailMessage | None:
    """The email telling the organisation's leads of the booking's move to `status`, or None
    if none of them has an email address. The one who made the change is not told of it."""
    booking = Booking.objects.select_related("wave", "organisation").get(pk=booking_id)
    event = booking.events.filter(to_status=status).order_by("at", "id").last()
    if event is None:
        raise ValueError(f"booking {booking_id} has never been {status}")
    recipients = _recipients(booking, exclude=event.actor_id)
    if not recipients:
        log.info("Booking %s is %s: no lead to email", booking.pk, status)
        return None
    counts = booking_status_counts(booking) if status == B.DONE else {}
    context = {
        "booking": booking,
        "wave": booking.wave,
        "organisation": booking.organisation,
        "event": event,
        "size": filesizeformat(booking.total_bytes),
        "completed": counts.get(MailboxStatus.COMPLETED, 0),
        "failed": counts.get(MailboxStatus.FAILED, 0),
        "booking_url": url("waves:booking_detail", booking.public_id),
        "failed_url": url("mailboxes:list")
        + f"?organisation={booking.organisation.code}&status={MailboxStatus.FAILED.value}",
        "book_url": url("waves:lead_waves"),
    }
    mailboxes = f"{booking.mailbox_count:,} mailbox{pluralize(booking.mailbox_count, 'es')}"
    if status == B.DONE:
        subject = (
            f"{booking.wave.name} finished: {context['completed']:,} of {mailboxes} of "
            f"{booking.organisation.name} moved"
        )
    else:
        subject = (
            f"{SUBJECTS[status]}: {mailboxes} of {booking.organisation.name} in {booking.wave.name}"
        )
    body = render_to_string(f"waves/emails/booking_{status}.txt", context)
    return EmailMessage(subject=subject, body=body, to=recipients)


def url(name: str, *args) -> str:
    return settings.PORTAL_URL + reverse(name, args=args)


def _recipients(booking: Booking, *, exclude: int | None) -> list[str]:
    """The organisation's leads and whoever submitted the booking: active, with an address."""
    users = (
        get_user_model()
        .objects.filter(Q(led_organisations=booking.organisation) | Q(pk=booking.submitted_by_id))
        .filter(is_active=True)
        .exclude(email="")
    )
    if exclude is not None:
        users = users.exclude(pk=exclude)
    return sorted(set(users.values_list("email", flat=True)))
