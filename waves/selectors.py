"""Reads of waves and bookings: capacity, queues, progress."""

from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from mailboxes.models import Mailbox, MailboxStatus, Organisation
from waves.models import (
    AWAITING_APPROVAL,
    BOOKING_COUNTED,
    Booking,
    BookingStatus,
    CohortMailbox,
    DataConsistency,
    Wave,
    WaveStatus,
)


def waves_with_capacity(waves: QuerySet[Wave] | None = None) -> QuerySet[Wave]:
    """Waves annotated with `used_mailboxes` and `used_bytes` held by their bookings."""
    active = Q(bookings__status__in=BOOKING_COUNTED)
    return (waves if waves is not None else Wave.objects.all()).annotate(
        used_mailboxes=Coalesce(Sum("bookings__mailbox_count", filter=active), Value(0)),
        used_bytes=Coalesce(Sum("bookings__total_bytes", filter=active), Value(0)),
    )


def waves_open_for_booking() -> QuerySet[Wave]:
    return waves_with_capacity(
        Wave.objects.filter(status=WaveStatus.OPEN, booking_deadline__gt=timezone.now())
    ).order_by("starts_at")


def bookings_for_organisations(organisations: QuerySet[Organisation]) -> QuerySet[Booking]:
    return (
        Booking.objects.filter(organisation__in=organisations)
        .select_related("wave", "organisation", "submitted_by")
        .order_by("-created_at")
    )


def organisations_not_booked(*, region: str = "", type_: str = "") -> QuerySet[Organisation]:
    """Organisations with mailboxes that have booked none of them: whom the central team chases.

    A rejected or withdrawn booking leaves an organisation on the list; one submitted, approved,
    under way or done takes it off. Leads come with them, by name.
    """
    booked = Booking.objects.filter(organisation=OuterRef("pk"), status__in=BOOKING_COUNTED)
    organisations = Organisation.objects.filter(
        Exists(Mailbox.objects.filter(organisation=OuterRef("pk")))
    ).exclude(Exists(booked))
    if region:
        organisations = organisations.filter(region=region)
    if type_:
        organisations = organisations.filter(type=type_)
    # Into a list of each organisation's own: the CSV reads them for 11,000 organisations, and
    # `organisation.leads.all()` makes a new manager each time it is called.
    leads = Prefetch(
        "leads",
        queryset=get_user_model().objects.order_by("last_name", "first_name", "username"),
        to_attr="lead_list",
    )
    return organisations.prefetch_related(leads).order_by("name", "code")


def booking_queue_by_wave() -> QuerySet[Wave]:
    """Waves with bookings waiting for a decision, with how many and their mailboxes."""
    waiting = Q(bookings__status=BookingStatus.SUBMITTED)
    return (
        Wave.objects.filter(waiting)
        .annotate(
            waiting_bookings=Count("bookings", filter=waiting),
            waiting_mailboxes=Sum("bookings__mailbox_count", filter=waiting),
        )
        .order_by("starts_at")
    )


def booking_queue() -> QuerySet[Booking]:
    """Bookings waiting for the central team, oldest first."""
    return (
        Booking.objects.filter(status=BookingStatus.SUBMITTED)
        .select_related("wave", "organisation", "submitted_by")
        .order_by("created_at")
    )


def wave_progress(wave: Wave) -> dict:
    """Counts of the wave's mailboxes by status, and the share settled (completed or failed).

    One pass over the wave's cohort rows (83,000 in a weekend wave), which carry a copy of each
    mailbox's status and size, gives the counts, the bytes and how many moves wait for approval
    of their skipped items, grouped by status.
    """
    rows = (
        CohortMailbox.objects.filter(booking__wave=wave, active=True)
        .values_list("mailbox_status")
        .annotate(
            n=Count("pk"),
            done=Coalesce(Sum("bytes_transferred"), Value(0)),
            size=Coalesce(Sum("size_bytes"), Value(0)),
            held=Count("pk", filter=AWAITING_APPROVAL),
        )
        .order_by()
    )
    counts: dict[str, int] = {}
    bytes_done = bytes_total = awaiting_approval = 0
    for status, n, done, size, held in rows:
        counts[status] = n
        bytes_done += done
        bytes_total += size
        awaiting_approval += held
    total = sum(counts.values())
    completed = counts.get(MailboxStatus.COMPLETED, 0)
    failed = counts.get(MailboxStatus.FAILED, 0)
    return {
        "by_status": [
            {"status": s, "label": s.label, "count": counts.get(s, 0)}
            for s in MailboxStatus
            if counts.get(s, 0)
        ],
        "total": total,
        "completed": completed,
        "failed": failed,
        "percent_completed": round(100 * completed / total, 1) if total else 0.0,
        "bytes_done": bytes_done,
        "bytes_total": bytes_total,
        "awaiting_approval": awaiting_approval,
    }


def wave_failures(wave: Wave, *, limit: int = 50) -> QuerySet[CohortMailbox]:
    """The wave's mailboxes that need attention, by address."""
    return (
        CohortMailbox.objects.filter(
            booking__wave=wave, active=True, mailbox_status=MailboxStatus.FAILED
        )
        .select_related("mailbox", "booking__organisation")
        .order_by("mailbox__address")[:limit]
    )


def booking_status_counts(booking: Booking) -> dict[str, int]:
    """How many of the booking's mailboxes are in each status: one grouped query."""
    return dict(
        booking.cohort.filter(active=True)
        .values_list("mailbox_status")
        .annotate(n=Count("pk"))
        .order_by()
    )


def mailbox_migration(mailbox: Mailbox) -> CohortMailbox | None:
    """The mailbox's current booking entry, or its latest one if none is active."""
    return (
        CohortMailbox.objects.filter(mailbox=mailbox)
        .select_related("booking__wave", "booking__organisation", "batch")
        .order_by("-active", "-pk")
        .first()
    )


def wave_awaiting_approval(wave: Wave) -> QuerySet[CohortMailbox]:
    """The wave's mailboxes held before completion until their skipped items are approved.

    Exchange grades each move's data consistency; an Investigate or Poor move does not complete
    until its skipped items are approved. The wave is not settled while any such mailbox waits
    (even one reported failed: an approval may let it go on).
    """
    return (
        CohortMailbox.objects.filter(AWAITING_APPROVAL, booking__wave=wave, active=True)
        .select_related("mailbox", "booking__organisation")
        .order_by("mailbox__address")
    )


def wave_awaiting_investigate(wave: Wave) -> QuerySet[CohortMailbox]:
    """Of those, the ones graded Investigate: what the wave page's "approve all" approves."""
    return wave_awaiting_approval(wave).filter(consistency=DataConsistency.INVESTIGATE)
