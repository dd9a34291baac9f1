"""Writes to waves and bookings: the capacity rules, approval, and operator actions.

Every refusal raises `BookingRefused` or `TransitionNotAllowed` with a message fit to show the
user, and leaves the database as it was (each service runs in one transaction).
"""

from collections.abc import Iterable, Sequence
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.template.defaultfilters import pluralize
from django.utils import timezone
from django_q.tasks import async_task

from mailboxes.models import GB, MAX_MAILBOX_BYTES, Mailbox, MailboxStatus, Organisation
from mailboxes.services import mailboxes_transition
from portal.lib.bulk import insert_rows
from portal.lib.transitions import (
    Actor,
    TransitionNotAllowed,
    actor_fields,
    chunked,
    transition_rows,
)
from waves.emails import email_soon
from waves.models import (
    BOOKING_ACTIVE,
    BOOKING_COUNTED,
    BOOKING_TRANSITIONS,
    MIGRATION_BATCH_TRANSITIONS,
    WAVE_TRANSITIONS,
    Booking,
    BookingEvent,
    BookingStatus,
    CohortMailbox,
    MigrationBatch,
    MigrationBatchEvent,
    MigrationBatchStatus,
    Wave,
    WaveEvent,
    WaveKind,
    WaveStatus,
)

BOOKABLE = {MailboxStatus.NOT_SCHEDULED, MailboxStatus.ROLLED_BACK}


class BookingRefused(Exception):
    """A booking the rules refuse; the message says why, in the user's words."""


class WaveRefused(Exception):
    """A wave plan the rules refuse; the message says why."""


def wave_transition(
    *, wave: Wave, to: WaveStatus, actor: Actor, reason: str = "", **updates
) -> None:
    moved = transition_rows(
        model=Wave,
        event_model=WaveEvent,
        event_fk="wave",
        allowed_from=WAVE_TRANSITIONS.get(to, set()),  # nothing leads back to planned
        ids=[wave.pk],
        to=to,
        actor=actor,
        reason=reason,
        updates=updates,
    )
    if not moved:
        current = Wave.objects.get(pk=wave.pk)
        raise TransitionNotAllowed(
            f"{wave.name} is {current.get_status_display().lower()}, so it cannot become "
            f"{WaveStatus(to).label.lower()}."
        )
    wave.refresh_from_db()


def bookings_transition(
    *, booking_ids: Sequence[int], to: BookingStatus, actor: Actor, reason: str = "", **updates
) -> list[int]:
    """Move bookings to `to` where the rules allow it; their leads are emailed once it commits."""
    moved = transition_rows(
        model=Booking,
        event_model=BookingEvent,
        event_fk="booking",
        allowed_from=BOOKING_TRANSITIONS.get(to, set()),  # nor back to submitted
        ids=booking_ids,
        to=to,
        actor=actor,
        reason=reason,
        updates=updates,
    )
    email_soon(moved, to)
    return moved


def batches_transition(
    *,
    batch_ids: Sequence[int],
    to: MigrationBatchStatus,
    actor: Actor,
    reason: str = "",
    expected_from: Iterable[MigrationBatchStatus] | None = None,
    **updates,
) -> list[int]:
    """Move migration batches to `to` where the rules allow it; return the ids that moved.

    A caller that asks for one batch and gets none back lost a race (two workers): it does
    nothing more.
    """
    return transition_rows(
        model=MigrationBatch,
        event_model=MigrationBatchEvent,
        event_fk="batch",
        allowed_from=MIGRATION_BATCH_TRANSITIONS.get(to, set()),
        ids=batch_ids,
        to=to,
        actor=actor,
        reason=reason,
        expected_from=expected_from,
        updates=updates,
    )


def _booking_transition(
    *, booking: Booking, to: BookingStatus, actor: Actor, reason: str = "", **updates
):
    if not bookings_transition(
        booking_ids=[booking.pk], to=to, actor=actor, reason=reason, **updates
    ):
        current = Booking.objects.get(pk=booking.pk)
        raise TransitionNotAllowed(
            f"This booking is {current.get_status_display().lower()}, so it cannot be "
            f"{BookingStatus(to).label.lower()}."
        )
    booking.refresh_from_db()


def wave_create(
    *,
    name: str,
    kind: WaveKind,
    starts_at: datetime,
    cutover_at: datetime,
    booking_deadline: datetime,
    capacity_mailboxes: int,
    capacity_gb: int,
    actor: Actor,
) -> Wave:
    """Plan a wave. Forms and the API check the same rules field by field; this is the guard."""
    if not name.strip():
        raise WaveRefused("Give the wave a name.")
    if cutover_at <= starts_at:
        raise WaveRefused("Cutover must be after the final sync starts.")
    if booking_deadline > starts_at:
        raise WaveRefused("The booking deadline must be before the wave starts.")
    if capacity_mailboxes < 1 or capacity_gb < 1:
        raise WaveRefused("A wave needs room for at least one mailbox and one GB.")
    with transaction.atomic():
        if Wave.objects.filter(name__iexact=name.strip()).exists():
            raise WaveRefused(f"A wave called {name.strip()} already exists.")
        wave = Wave.objects.create(
            name=name,
            kind=kind,
            starts_at=starts_at,
            cutover_at=cutover_at,
            booking_deadline=booking_deadline,
            capacity_mailboxes=capacity_mailboxes,
            capacity_gb=capacity_gb,
        )
        WaveEvent.objects.create(
            wave=wave,
            at=wave.created_at,
            to_status=WaveStatus.PLANNED,
            reason="Created",
            **actor_fields(actor),
        )
    return wave


def wave_open(*, wave: Wave, actor: Actor) -> None:
    if wave.booking_deadline <= timezone.now():
        raise TransitionNotAllowed(f"{wave.name}'s booking deadline has passed, so it cannot open.")
    wave_transition(wave=wave, to=WaveStatus.OPEN, actor=actor, reason="Opened for booking")


def wave_close(*, wave: Wave, actor: Actor) -> None:
    wave_transition(wave=wave, to=WaveStatus.CLOSED, actor=actor, reason="Closed for booking")


def wave_cancel(*, wave: Wave, actor: Actor, reason: str) -> None:
    if not reason.strip():
        raise TransitionNotAllowed("Give a reason for cancelling the wave.")
    with transaction.atomic():
        wave_transition(wave=wave, to=WaveStatus.CANCELLED, actor=actor, reason=reason)
        for booking in wave.bookings.filter(status__in=BOOKING_ACTIVE):
            _release(
                booking=booking,
                to=BookingStatus.WITHDRAWN,
                actor=actor,
                reason=f"Wave cancelled: {reason}",
            )


def wave_start(*, wave: Wave, actor: Actor) -> None:
    with transaction.atomic():
        # Locked first: a booking withdrawn at this moment waits, or is refused after the start.
        Wave.objects.select_for_update().get(pk=wave.pk)
        if not wave.bookings.filter(status=BookingStatus.APPROVED).exists():
            raise TransitionNotAllowed(f"{wave.name} has no approved bookings to migrate.")
        if wave.bookings.filter(status=BookingStatus.SUBMITTED).exists():
            raise TransitionNotAllowed(
                f"{wave.name} still has bookings waiting for a decision: approve or reject them first."
            )
        wave_transition(wave=wave, to=WaveStatus.RUNNING, actor=actor, reason="Started")
        drive_soon(wave)


def wave_pause(*, wave: Wave, actor: Actor, reason: str = "") -> None:
    with transaction.atomic():
        wave_transition(wave=wave, to=WaveStatus.PAUSED, actor=actor, reason=reason or "Paused")
        drive_soon(wave)


def wave_resume(*, wave: Wave, actor: Actor) -> None:
    with transaction.atomic():
        wave_transition(wave=wave, to=WaveStatus.RUNNING, actor=actor, reason="Resumed")
        drive_soon(wave)


def drive_soon(wave: Wave) -> None:
    """Queue the worker task that moves the wave on, once this transaction has committed."""
    transaction.on_commit(
        lambda: async_task("waves.tasks.drive_wave", wave.pk, task_name=f"drive-wave-{wave.pk}")
    )


def wave_capacity_used(wave: Wave) -> tuple[int, int]:
    """(mailboxes, bytes) held by the wave's bookings."""
    used = wave.bookings.filter(status__in=BOOKING_COUNTED).aggregate(
        mailboxes=Sum("mailbox_count"), bytes=Sum("total_bytes")
    )
    return used["mailboxes"] or 0, used["bytes"] or 0


def cohort_transition(
    *,
    mailbox_ids: Sequence[int],
    to: MailboxStatus,
    actor: Actor,
    reason: str = "",
    expected_from: Iterable[str] | None = None,
) -> list[int]:
    """Move booked mailboxes (`mailboxes_transition`) and keep their cohort rows' copy in step.

    Every status change of a mailbox with an active cohort row goes through here, in the same
    transaction, so the copy a wave counts by never disagrees with the mailbox. (The poll,
    `transfers.batch_poll`, writes the copy itself, together with each row's progress.)
    """
    with transaction.atomic():
        moved = mailboxes_transition(
            mailbox_ids=mailbox_ids, to=to, actor=actor, reason=reason, expected_from=expected_from
        )
        for chunk in chunked(moved):
            CohortMailbox.objects.filter(mailbox_id__in=chunk, active=True).update(
                mailbox_status=to
            )
    return moved


def booking_create(
    *,
    wave: Wave,
    organisation: Organisation,
    actor: Actor,
    mailbox_ids: Iterable[int] | None = None,
    addresses: Iterable[str] | None = None,
) -> Booking:
    """Book an organisation's cohort into a wave: its mailboxes chosen by id or listed by
    address, or all not yet booked.

    The wave's row is locked while its free capacity is checked and taken, so however many
    leads book at once the wave never holds more than its capacity. Listed addresses that are
    not the organisation's mailboxes, or not free to book, are named in the refusal.

    Mailboxes over 200 GB, which Exchange Online does not move, are not booked: "all not yet
    booked" leaves them out (the booking's first event says how many), and a cohort chosen or
    listed with one is refused, naming it.
    """
    if mailbox_ids is not None and addresses is not None:
        raise ValueError("Give mailbox ids or addresses, not both.")
    left_out = 0  # mailboxes over 200 GB that "all not yet booked" leaves out
    with transaction.atomic():
        wave = Wave.objects.select_for_update().get(pk=wave.pk)
        if wave.status != WaveStatus.OPEN:
            raise BookingRefused(
                f"{wave.name} is {wave.get_status_display().lower()}, not open for booking."
            )
        if timezone.now() >= wave.booking_deadline:
            raise BookingRefused(f"The booking deadline for {wave.name} has passed.")

        candidates = Mailbox.objects.filter(organisation=organisation)
        if addresses is not None:
            chosen = _cohort_listed(candidates, organisation, addresses)
        elif mailbox_ids is None:
            left = list(candidates.filter(status__in=BOOKABLE).values_list("pk", "size_bytes"))
            chosen = [(pk, size) for pk, size in left if size <= MAX_MAILBOX_BYTES]
            left_out = len(left) - len(chosen)
            if not chosen:
                raise BookingRefused(
                    f"{organisation.name}'s {left_out:,} mailbox{pluralize(left_out, 'es')} left"
                    f" to book {pluralize(left_out, 'is,are')} over 200 GB, which Exchange Online"
                    f" does not move: reduce {pluralize(left_out, 'it,them')} (archive or delete"
                    " old mail) before booking."
                    if left_out
                    else f"{organisation.name} has no mailboxes left to book."
                )
        else:
            wanted = set(mailbox_ids)
            if not wanted:
                raise BookingRefused("Choose at least one mailbox to book.")
            # The organisation's mailboxes (at most tens of thousands, together on disk) read
            # in one pass, rather than 20,000 chosen ids sent as a list to match.
            found = [
                row
                for row in candidates.values_list("pk", "status", "size_bytes")
                if row[0] in wanted
            ]
            if len(found) != len(wanted):
                raise BookingRefused(
                    f"{len(wanted) - len(found)} of the chosen mailboxes do not belong to "
                    f"{organisation.name}."
                )
            taken = [pk for pk, status, _ in found if status not in BOOKABLE]
            if taken:
                raise BookingRefused(
                    f"{len(taken)} of the chosen mailboxes are already booked or migrated."
                )
            _refuse_too_large([(pk, size) for pk, _, size in found])
            chosen = [(pk, size_bytes) for pk, _, size_bytes in found]

        count = len(chosen)
        size = sum(s for _, s in chosen)
        used_mailboxes, used_bytes = wave_capacity_used(wave)
        free_mailboxes = wave.capacity_mailboxes - used_mailboxes
        free_bytes = wave.capacity_bytes - used_bytes
        if count > free_mailboxes:
            raise BookingRefused(
                f"{wave.name} has room for {max(free_mailboxes, 0):,} more mailboxes; "
                f"this cohort has {count:,}."
            )
        if size > free_bytes:
            raise BookingRefused(
                f"{wave.name} has room for {max(free_bytes, 0) / 1024**3:,.1f} GB more; "
                f"this cohort holds {size / 1024**3:,.1f} GB."
            )

        booking = Booking.objects.create(
            wave=wave,
            organisation=organisation,
            status=BookingStatus.SUBMITTED,
            mailbox_count=count,
            total_bytes=size,
            submitted_by=actor,
        )
        BookingEvent.objects.create(
            booking=booking,
            at=booking.created_at,
            to_status=BookingStatus.SUBMITTED,
            reason=f"{count:,} mailboxes booked"
            + (
                f"; {left_out:,} over 200 GB left out: Exchange Online does not move them"
                if left_out
                else ""
            ),
            **actor_fields(actor),
        )
        ids = [pk for pk, _ in chosen]
        try:
            with transaction.atomic():
                insert_rows(
                    CohortMailbox,
                    ["mailbox", "size_bytes"],
                    chosen,
                    booking=booking,
                    mailbox_status=MailboxStatus.BOOKED,
                )
        except IntegrityError:
            raise BookingRefused(
                "Some of these mailboxes were booked by someone else a moment ago. Try again."
            ) from None
        # The cohort rows were written with the copy already Booked.
        moved = mailboxes_transition(
            mailbox_ids=ids,
            to=MailboxStatus.BOOKED,
            actor=actor,
            reason=f"Booked into {wave.name}",
            expected_from=BOOKABLE,
        )
        if len(moved) != count:
            raise BookingRefused("Some of these mailboxes changed status while booking. Try again.")
    return booking


LISTED_SHOWN = 5  # addresses named in a refusal; the rest are counted


def _cohort_listed(candidates, organisation: Organisation, addresses: Iterable[str]) -> list:
    """(id, size) of each listed mailbox, or BookingRefused naming those that cannot be booked.

    Read in one pass over the organisation's mailboxes, as for chosen ids.
    """
    wanted = {address.strip().lower() for address in addresses} - {""}
    if not wanted:
        raise BookingRefused("List at least one address to book.")
    found = {
        address: (pk, status, size_bytes)
        for pk, address, status, size_bytes in candidates.values_list(
            "pk", "address", "status", "size_bytes"
        )
        if address in wanted
    }
    unknown = sorted(wanted - found.keys())
    if unknown:
        raise BookingRefused(
            f"{_some(unknown)} {'is not a mailbox' if len(unknown) == 1 else 'are not mailboxes'}"
            f" of {organisation.name}."
        )
    taken = sorted(
        f"{address} ({MailboxStatus(status).label.lower()})"
        for address, (_, status, _) in found.items()
        if status not in BOOKABLE
    )
    if taken:
        raise BookingRefused(
            f"{_some(taken)} {'is' if len(taken) == 1 else 'are'} already booked or migrated."
        )
    _refuse_too_large([(pk, size) for pk, _, size in found.values()])
    return [(pk, size_bytes) for pk, _, size_bytes in found.values()]


def _refuse_too_large(cohort: list[tuple[int, int]]) -> None:
    """BookingRefused naming the mailboxes of the cohort (id, size) over 200 GB, if any."""
    too_large = [pk for pk, size in cohort if size > MAX_MAILBOX_BYTES]
    if not too_large:
        return
    named = Mailbox.objects.filter(pk__in=too_large).order_by("address")
    shown = [
        f"{address} ({size / GB:,.0f} GB)"
        for address, size in named.values_list("address", "size_bytes")[:LISTED_SHOWN]
    ]
    n = len(too_large)
    raise BookingRefused(
        f"{_some(shown, total=n)} {pluralize(n, 'is,are')} over 200 GB, which Exchange Online"
        f" does not move: reduce {pluralize(n, 'it,them')} (archive or delete old mail) before"
        f" booking, or book the cohort without {pluralize(n, 'it,them')}."
    )


def _some(items: list[str], *, total: int | None = None) -> str:
    """The first LISTED_SHOWN items, and how many more of `total` (by default, of `items`)."""
    shown = ", ".join(items[:LISTED_SHOWN])
    more = (len(items) if total is None else total) - min(len(items), LISTED_SHOWN)
    return f"{shown} and {more:,} more" if more > 0 else shown


def _wave_taking_approvals(wave_id: int) -> Wave:
    """The wave, its row locked, if bookings into it may still be approved (it has not started)."""
    wave = Wave.objects.select_for_update().get(pk=wave_id)
    if wave.status not in {WaveStatus.OPEN, WaveStatus.CLOSED}:
        raise TransitionNotAllowed(
            f"{wave.name} is {wave.get_status_display().lower()}: bookings can no longer be approved."
        )
    return wave


def booking_approve(*, booking: Booking, actor: Actor) -> None:
    with transaction.atomic():
        wave = _wave_taking_approvals(booking.wave_id)
        _booking_transition(
            booking=booking, to=BookingStatus.APPROVED, actor=actor, reason="Approved"
        )
        cohort_transition(
            mailbox_ids=_cohort_ids(booking),
            to=MailboxStatus.SCHEDULED,
            actor=actor,
            reason=f"Booking approved for {wave.name}",
            expected_from={MailboxStatus.BOOKED},
        )


def wave_approve_bookings(*, wave: Wave, actor: Actor) -> tuple[int, int]:
    """Approve every booking of the wave still waiting for a decision, in one transaction.

    The same as approving each one (their capacity was taken when they were booked), done in
    two set-based statements: a weekend wave's 600 bookings and 83,000 mailboxes at once.
    Returns (bookings, mailboxes) approved.
    """
    with transaction.atomic():
        wave = _wave_taking_approvals(wave.pk)
        waiting = wave.bookings.filter(status=BookingStatus.SUBMITTED).values_list("pk", flat=True)
        approved = bookings_transition(
            booking_ids=list(waiting), to=BookingStatus.APPROVED, actor=actor, reason="Approved"
        )
        mailbox_ids = list(
            CohortMailbox.objects.filter(booking__in=approved, active=True).values_list(
                "mailbox_id", flat=True
            )
        )
        cohort_transition(
            mailbox_ids=mailbox_ids,
            to=MailboxStatus.SCHEDULED,
            actor=actor,
            reason=f"Booking approved for {wave.name}",
            expected_from={MailboxStatus.BOOKED},
        )
    return len(approved), len(mailbox_ids)


def booking_reject(*, booking: Booking, actor: Actor, reason: str) -> None:
    if not reason.strip():
        raise TransitionNotAllowed("Give a reason for rejecting the booking.")
    _release(
        booking=booking,
        to=BookingStatus.REJECTED,
        actor=actor,
        reason=reason.strip(),
        decision_reason=reason.strip(),
    )


def booking_withdraw(
    *, booking: Booking, actor: Actor, reason: str = "", after_deadline: bool = False
) -> None:
    """Withdraw before the deadline; the central team (`after_deadline`) may until the wave runs."""
    if timezone.now() >= booking.wave.booking_deadline and not after_deadline:
        raise TransitionNotAllowed(
            f"The booking deadline for {booking.wave.name} has passed: ask the central team."
        )
    if booking.wave.status not in {WaveStatus.OPEN, WaveStatus.CLOSED}:
        raise TransitionNotAllowed(
            f"{booking.wave.name} is {booking.wave.get_status_display().lower()}: "
            "its bookings can no longer be withdrawn."
        )
    _release(
        booking=booking,
        to=BookingStatus.WITHDRAWN,
        actor=actor,
        reason=reason.strip() or "Withdrawn by the organisation",
    )


def _release(*, booking: Booking, to: BookingStatus, actor: Actor, reason: str, **updates) -> None:
    """End a booking before it runs: free its capacity and its mailboxes."""
    with transaction.atomic():
        Wave.objects.select_for_update().get(pk=booking.wave_id)
        _booking_transition(booking=booking, to=to, actor=actor, reason=reason, **updates)
        cohort_transition(
            mailbox_ids=_cohort_ids(booking),
            to=MailboxStatus.NOT_SCHEDULED,
            actor=actor,
            reason=f"Booking {BookingStatus(to).label.lower()}: {reason}",
            expected_from={MailboxStatus.BOOKED, MailboxStatus.SCHEDULED},
        )
        CohortMailbox.objects.filter(booking=booking, active=True).update(active=False)


def _cohort_ids(booking: Booking) -> list[int]:
    return list(booking.cohort.filter(active=True).values_list("mailbox_id", flat=True))
