"""Booking rules, through the services the views call (`waves.services`).

Airedale (alice) has 30 mailboxes of 0.5 GB, Bradford (bob) 12; carol is the central team.
Every refusal must leave the database exactly as it was.
"""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from mailboxes.models import Mailbox, MailboxEvent, MailboxStatus
from portal.lib.transitions import TransitionNotAllowed
from tests.conftest import GB, make_organisation, make_wave
from waves.models import (
    Booking,
    BookingEvent,
    BookingStatus,
    CohortMailbox,
    Wave,
    WaveEvent,
    WaveStatus,
)
from waves.services import (
    BookingRefused,
    booking_approve,
    booking_create,
    booking_reject,
    booking_withdraw,
    wave_cancel,
    wave_capacity_used,
    wave_close,
    wave_start,
)

S = MailboxStatus


def snapshot() -> dict:
    """Everything a booking service may write."""
    return {
        "bookings": list(Booking.objects.order_by("pk").values_list("pk", "status")),
        "booking events": BookingEvent.objects.count(),
        "cohorts": list(CohortMailbox.objects.order_by("pk").values_list("pk", "active")),
        "mailboxes": list(
            Mailbox.objects.order_by("pk").values_list("pk", "status", "status_changed_at")
        ),
        "mailbox events": MailboxEvent.objects.count(),
        "waves": list(Wave.objects.order_by("pk").values_list("pk", "status")),
        "wave events": WaveEvent.objects.count(),
        "tasks": OrmQ.objects.count(),
    }


def arrange_mailboxes(mailboxes, status: MailboxStatus) -> list[int]:
    """Test set-up: put mailboxes in a status as if an earlier wave had left them there."""
    ids = [m.pk for m in mailboxes]
    Mailbox.objects.filter(pk__in=ids).update(status=status)
    return ids


def pass_the_deadline(wave: Wave) -> None:
    Wave.objects.filter(pk=wave.pk).update(booking_deadline=timezone.now() - timedelta(minutes=1))
    wave.refresh_from_db()


def statuses(organisation) -> set[str]:
    return set(organisation.mailboxes.values_list("status", flat=True))


# Booking a cohort


def test_it_books_every_mailbox_not_yet_booked_when_none_are_chosen(wave, airedale, alice):
    mailboxes = list(airedale.mailboxes.order_by("address"))
    migrated = arrange_mailboxes(mailboxes[:3], S.COMPLETED)
    rolled_back = arrange_mailboxes(mailboxes[3:5], S.ROLLED_BACK)
    before = timezone.now()

    booking = booking_create(wave=wave, organisation=airedale, actor=alice)

    assert (booking.wave, booking.organisation, booking.submitted_by) == (wave, airedale, alice)
    assert booking.status == BookingStatus.SUBMITTED
    assert (booking.mailbox_count, booking.total_bytes) == (27, 27 * GB // 2)
    expected = {m.pk for m in mailboxes[3:]}
    assert set(booking.cohort.filter(active=True).values_list("mailbox_id", flat=True)) == expected
    assert Mailbox.objects.filter(pk__in=expected, status=S.BOOKED).count() == 27
    assert set(Mailbox.objects.filter(pk__in=migrated).values_list("status", flat=True)) == {
        S.COMPLETED
    }
    (event,) = booking.events.all()
    assert (event.from_status, event.to_status, event.actor) == ("", BookingStatus.SUBMITTED, alice)
    assert event.reason == "27 mailboxes booked"
    assert before <= event.at <= timezone.now()
    events = MailboxEvent.objects.filter(mailbox__organisation=airedale)
    assert events.count() == 27
    assert set(events.values_list("to_status", "actor", "reason")) == {
        (S.BOOKED, alice.pk, "Booked into Weeknight 1")
    }
    assert set(events.filter(mailbox_id__in=rolled_back).values_list("from_status", flat=True)) == {
        S.ROLLED_BACK
    }
    assert wave_capacity_used(wave) == (27, 27 * GB // 2)


def test_it_books_only_the_chosen_mailboxes(wave, airedale, alice):
    chosen = list(airedale.mailboxes.order_by("address").values_list("pk", flat=True)[:7])

    booking = booking_create(wave=wave, organisation=airedale, actor=alice, mailbox_ids=chosen)

    assert (booking.mailbox_count, booking.total_bytes) == (7, 7 * GB // 2)
    assert sorted(booking.cohort.values_list("mailbox_id", flat=True)) == sorted(chosen)
    assert sorted(
        airedale.mailboxes.filter(status=S.BOOKED).values_list("pk", flat=True)
    ) == sorted(chosen)
    assert airedale.mailboxes.filter(status=S.NOT_SCHEDULED).count() == 23
    assert MailboxEvent.objects.count() == 7


def test_it_refuses_a_cohort_with_more_mailboxes_than_the_wave_has_room_for(
    carol, airedale, alice, bradford, bob
):
    wave = make_wave(carol, name="Pilot 3", capacity_mailboxes=40)
    booking_create(wave=wave, organisation=bradford, actor=bob)
    before = snapshot()

    with pytest.raises(BookingRefused) as refused:
        booking_create(wave=wave, organisation=airedale, actor=alice)

    assert str(refused.value) == "Pilot 3 has room for 28 more mailboxes; this cohort has 30."
    assert snapshot() == before


def test_it_refuses_a_cohort_bigger_than_the_data_the_wave_has_room_for(
    carol, airedale, alice, bradford, bob
):
    wave = make_wave(carol, name="Pilot 4", capacity_gb=10)
    booking_create(wave=wave, organisation=bradford, actor=bob)  # 6 GB
    before = snapshot()

    with pytest.raises(BookingRefused) as refused:
        booking_create(wave=wave, organisation=airedale, actor=alice)

    assert str(refused.value) == "Pilot 4 has room for 4.0 GB more; this cohort holds 15.0 GB."
    assert snapshot() == before
    # A chosen subset that fits is fine: 8 mailboxes are 4 GB.
    subset = airedale.mailboxes.values_list("pk", flat=True)[:8]
    assert booking_create(wave=wave, organisation=airedale, actor=alice, mailbox_ids=subset)


def test_a_cohort_that_exactly_fills_the_wave_is_accepted(carol, airedale, alice, bradford, bob):
    wave = make_wave(carol, name="Pilot 5", capacity_mailboxes=42, capacity_gb=21)

    booking_create(wave=wave, organisation=bradford, actor=bob)
    booking_create(wave=wave, organisation=airedale, actor=alice)

    assert wave_capacity_used(wave) == (42, 21 * GB)
    with pytest.raises(BookingRefused, match="room for 0 more mailboxes"):
        booking_create(
            wave=wave,
            organisation=make_organisation("Y01", "Yorkshire ICB", lead=bob, mailboxes=1),
            actor=bob,
        )


def test_it_refuses_to_book_mailboxes_already_booked_into_this_or_another_wave(
    wave, carol, airedale, alice
):
    other_wave = make_wave(carol, name="Weeknight 2")
    first = list(airedale.mailboxes.order_by("address").values_list("pk", flat=True)[:10])
    booking_create(wave=wave, organisation=airedale, actor=alice, mailbox_ids=first)
    before = snapshot()

    for target in (wave, other_wave):
        overlapping = first[7:] + list(
            airedale.mailboxes.filter(status=S.NOT_SCHEDULED).values_list("pk", flat=True)[:5]
        )
        with pytest.raises(BookingRefused) as refused:
            booking_create(wave=target, organisation=airedale, actor=alice, mailbox_ids=overlapping)
        assert str(refused.value) == "3 of the chosen mailboxes are already booked or migrated."
        assert snapshot() == before

    # "All not yet booked" takes only the other 20, and then there are none left.
    rest = booking_create(wave=other_wave, organisation=airedale, actor=alice)
    assert rest.mailbox_count == 20
    assert not set(rest.cohort.values_list("mailbox_id", flat=True)) & set(first)
    before = snapshot()
    with pytest.raises(BookingRefused) as refused:
        booking_create(wave=wave, organisation=airedale, actor=alice)
    assert str(refused.value) == "Airedale NHS Foundation Trust has no mailboxes left to book."
    assert snapshot() == before


def test_it_refuses_mailboxes_already_migrated(wave, airedale, alice):
    migrated = arrange_mailboxes(airedale.mailboxes.all()[:2], S.COMPLETED)
    before = snapshot()

    with pytest.raises(BookingRefused, match="^2 of the chosen mailboxes are already booked"):
        booking_create(wave=wave, organisation=airedale, actor=alice, mailbox_ids=migrated)

    assert snapshot() == before


def test_it_refuses_a_booking_after_the_deadline(wave, airedale, alice):
    pass_the_deadline(wave)
    before = snapshot()

    with pytest.raises(BookingRefused) as refused:
        booking_create(wave=wave, organisation=airedale, actor=alice)

    assert str(refused.value) == "The booking deadline for Weeknight 1 has passed."
    assert snapshot() == before


@pytest.mark.parametrize("status", [s for s in WaveStatus if s != WaveStatus.OPEN])
def test_it_refuses_a_booking_into_a_wave_that_is_not_open(carol, airedale, alice, status):
    wave = make_wave(carol, open_=False)
    Wave.objects.filter(pk=wave.pk).update(status=status)  # test set-up
    before = snapshot()

    with pytest.raises(BookingRefused) as refused:
        booking_create(wave=wave, organisation=airedale, actor=alice)

    assert str(refused.value) == (f"Weeknight 1 is {status.label.lower()}, not open for booking.")
    assert snapshot() == before


def test_it_refuses_a_subset_holding_another_organisations_mailboxes(
    wave, airedale, alice, bradford
):
    chosen = list(airedale.mailboxes.values_list("pk", flat=True)[:5])
    chosen += list(bradford.mailboxes.values_list("pk", flat=True)[:2])
    before = snapshot()

    with pytest.raises(BookingRefused) as refused:
        booking_create(wave=wave, organisation=airedale, actor=alice, mailbox_ids=chosen)

    assert str(refused.value) == (
        "2 of the chosen mailboxes do not belong to Airedale NHS Foundation Trust."
    )
    assert snapshot() == before
    with pytest.raises(BookingRefused, match="^1 of the chosen mailboxes do not belong"):
        booking_create(
            wave=wave, organisation=airedale, actor=alice, mailbox_ids=[chosen[0], 987_654_321]
        )
    assert snapshot() == before


def make_too_large(mailboxes, gigabytes: float = 201) -> list[str]:
    """Test set-up: the inventory says these mailboxes hold `gigabytes` each."""
    Mailbox.objects.filter(pk__in=[m.pk for m in mailboxes]).update(size_bytes=int(gigabytes * GB))
    return [m.address for m in mailboxes]


def test_all_not_yet_booked_leaves_out_mailboxes_over_200_gb_and_says_so(wave, airedale, alice):
    mailboxes = list(airedale.mailboxes.order_by("address"))
    too_large = make_too_large(mailboxes[:2])
    make_too_large(mailboxes[2:3], gigabytes=200)  # the limit itself: moved

    booking = booking_create(wave=wave, organisation=airedale, actor=alice)

    assert (booking.mailbox_count, booking.total_bytes) == (28, 200 * GB + 27 * GB // 2)
    booked = set(booking.cohort.values_list("mailbox__address", flat=True))
    assert booked == {m.address for m in mailboxes[2:]}
    assert set(Mailbox.objects.filter(address__in=too_large).values_list("status", flat=True)) == {
        S.NOT_SCHEDULED
    }
    assert booking.events.get().reason == (
        "28 mailboxes booked; 2 over 200 GB left out: Exchange Online does not move them"
    )


def test_all_not_yet_booked_is_refused_when_every_one_left_is_over_200_gb(wave, airedale, alice):
    mailboxes = list(airedale.mailboxes.order_by("address"))
    arrange_mailboxes(mailboxes[1:], S.COMPLETED)
    make_too_large(mailboxes[:1], gigabytes=250)
    before = snapshot()

    with pytest.raises(BookingRefused) as refused:
        booking_create(wave=wave, organisation=airedale, actor=alice)

    assert str(refused.value) == (
        "Airedale NHS Foundation Trust's 1 mailbox left to book is over 200 GB, which Exchange"
        " Online does not move: reduce it (archive or delete old mail) before booking."
    )
    assert snapshot() == before


def test_a_chosen_cohort_with_mailboxes_over_200_gb_is_refused_naming_them(wave, airedale, alice):
    mailboxes = list(airedale.mailboxes.order_by("address"))
    too_large = make_too_large(mailboxes[:7])
    before = snapshot()

    with pytest.raises(BookingRefused) as refused:
        booking_create(
            wave=wave,
            organisation=airedale,
            actor=alice,
            mailbox_ids=[m.pk for m in mailboxes[:10]],
        )

    named = ", ".join(f"{address} (201 GB)" for address in sorted(too_large)[:5])
    assert str(refused.value) == (
        f"{named} and 2 more are over 200 GB, which Exchange Online does not move: reduce them"
        " (archive or delete old mail) before booking, or book the cohort without them."
    )
    assert snapshot() == before


def test_a_listed_cohort_with_a_mailbox_over_200_gb_is_refused_naming_it(wave, airedale, alice):
    mailboxes = list(airedale.mailboxes.order_by("address"))
    (too_large,) = make_too_large(mailboxes[:1], gigabytes=300.4)
    before = snapshot()

    with pytest.raises(BookingRefused) as refused:
        booking_create(
            wave=wave,
            organisation=airedale,
            actor=alice,
            addresses=[m.address.upper() for m in mailboxes[:4]],
        )

    assert str(refused.value) == (
        f"{too_large} (300 GB) is over 200 GB, which Exchange Online does not move: reduce it"
        " (archive or delete old mail) before booking, or book the cohort without it."
    )
    assert snapshot() == before


def test_it_refuses_an_empty_choice(wave, airedale, alice):
    with pytest.raises(BookingRefused, match="^Choose at least one mailbox to book.$"):
        booking_create(wave=wave, organisation=airedale, actor=alice, mailbox_ids=[])
    assert not Booking.objects.exists()


# Withdrawing


@pytest.mark.parametrize("approved", [False, True], ids=["submitted", "approved"])
def test_withdrawing_before_the_deadline_frees_the_capacity_and_the_mailboxes(
    carol, airedale, alice, bradford, bob, approved
):
    wave = make_wave(carol, name="Pilot 6", capacity_mailboxes=30)
    booking = booking_create(wave=wave, organisation=airedale, actor=alice)
    if approved:
        booking_approve(booking=booking, actor=carol)
    with pytest.raises(BookingRefused, match="room for 0 more mailboxes"):
        booking_create(wave=wave, organisation=bradford, actor=bob)

    booking_withdraw(booking=booking, actor=alice, reason="  Board asked us to wait  ")

    booking.refresh_from_db()
    assert booking.status == BookingStatus.WITHDRAWN
    last = booking.events.last()
    assert (last.to_status, last.actor, last.reason) == (
        BookingStatus.WITHDRAWN,
        alice,
        "Board asked us to wait",
    )
    assert statuses(airedale) == {S.NOT_SCHEDULED}
    assert not booking.cohort.filter(active=True).exists()
    assert booking.cohort.count() == 30  # kept for history
    freed = MailboxEvent.objects.filter(to_status=S.NOT_SCHEDULED)
    assert freed.count() == 30
    assert set(freed.values_list("reason", flat=True)) == {
        "Booking withdrawn: Board asked us to wait"
    }
    assert wave_capacity_used(wave) == (0, 0)
    assert booking_create(wave=wave, organisation=bradford, actor=bob).mailbox_count == 12
    # Airedale's mailboxes can be booked again, into another wave.
    again = booking_create(
        wave=make_wave(carol, name="Pilot 7"), organisation=airedale, actor=alice
    )
    assert again.mailbox_count == 30


def test_withdrawing_after_the_deadline_is_refused(wave, airedale, alice):
    booking = booking_create(wave=wave, organisation=airedale, actor=alice)
    pass_the_deadline(wave)
    booking.refresh_from_db()
    before = snapshot()

    with pytest.raises(TransitionNotAllowed) as refused:
        booking_withdraw(booking=booking, actor=alice)

    assert str(refused.value) == (
        "The booking deadline for Weeknight 1 has passed: ask the central team."
    )
    assert snapshot() == before


def test_the_central_team_may_withdraw_a_booking_after_the_deadline(wave, airedale, alice, carol):
    booking = booking_create(wave=wave, organisation=airedale, actor=alice)
    pass_the_deadline(wave)
    booking.refresh_from_db()

    booking_withdraw(booking=booking, actor=carol, reason="Trust asked", after_deadline=True)

    assert Booking.objects.get(pk=booking.pk).status == BookingStatus.WITHDRAWN
    assert statuses(airedale) == {S.NOT_SCHEDULED}
    assert wave_capacity_used(wave) == (0, 0)


@pytest.mark.parametrize("status", [WaveStatus.RUNNING, WaveStatus.PAUSED, WaveStatus.DONE])
def test_no_one_may_withdraw_a_booking_once_its_wave_has_started(
    wave, airedale, alice, carol, status
):
    booking = booking_create(wave=wave, organisation=airedale, actor=alice)
    booking_approve(booking=booking, actor=carol)
    Wave.objects.filter(pk=wave.pk).update(status=status)  # test set-up
    booking.refresh_from_db()
    before = snapshot()

    with pytest.raises(TransitionNotAllowed) as refused:
        booking_withdraw(booking=booking, actor=carol, after_deadline=True)

    assert str(refused.value) == (
        f"Weeknight 1 is {status.label.lower()}: its bookings can no longer be withdrawn."
    )
    assert snapshot() == before


# Deciding


def test_approval_schedules_the_booked_mailboxes(wave, airedale, alice, carol):
    booking = booking_create(wave=wave, organisation=airedale, actor=alice)

    booking_approve(booking=booking, actor=carol)

    assert booking.status == BookingStatus.APPROVED
    assert statuses(airedale) == {S.SCHEDULED}
    scheduled = MailboxEvent.objects.filter(to_status=S.SCHEDULED)
    assert scheduled.count() == 30
    assert set(scheduled.values_list("from_status", "actor", "reason")) == {
        (S.BOOKED, carol.pk, "Booking approved for Weeknight 1")
    }
    assert wave_capacity_used(wave) == (30, 15 * GB)  # still held


def test_approval_is_refused_once_the_wave_is_running(wave, airedale, alice, carol):
    booking = booking_create(wave=wave, organisation=airedale, actor=alice)
    Wave.objects.filter(pk=wave.pk).update(status=WaveStatus.RUNNING)  # test set-up
    before = snapshot()

    with pytest.raises(TransitionNotAllowed) as refused:
        booking_approve(booking=booking, actor=carol)

    assert str(refused.value) == "Weeknight 1 is running: bookings can no longer be approved."
    assert snapshot() == before


@pytest.mark.parametrize("reason", ["", "   "], ids=["empty", "blank"])
def test_rejection_needs_a_reason(wave, airedale, alice, carol, reason):
    booking = booking_create(wave=wave, organisation=airedale, actor=alice)
    before = snapshot()

    with pytest.raises(TransitionNotAllowed, match="^Give a reason for rejecting the booking.$"):
        booking_reject(booking=booking, actor=carol, reason=reason)

    assert snapshot() == before


def test_rejection_frees_the_mailboxes_and_records_the_reason(wave, airedale, alice, carol):
    booking = booking_create(wave=wave, organisation=airedale, actor=alice)

    booking_reject(booking=booking, actor=carol, reason=" Shared mailboxes missing delegates ")

    booking.refresh_from_db()
    assert booking.status == BookingStatus.REJECTED
    assert booking.decision_reason == "Shared mailboxes missing delegates"
    assert booking.events.last().reason == "Shared mailboxes missing delegates"
    assert statuses(airedale) == {S.NOT_SCHEDULED}
    assert not booking.cohort.filter(active=True).exists()
    assert wave_capacity_used(wave) == (0, 0)


# The wave as a whole


def test_cancelling_a_wave_withdraws_its_bookings(wave, carol, airedale, alice, bradford, bob):
    approved = booking_create(wave=wave, organisation=airedale, actor=alice)
    booking_approve(booking=approved, actor=carol)
    submitted = booking_create(wave=wave, organisation=bradford, actor=bob)
    leeds = make_organisation("RR8", "Leeds Teaching Hospitals", lead=bob, mailboxes=4)
    rejected = booking_create(wave=wave, organisation=leeds, actor=bob)
    booking_reject(booking=rejected, actor=carol, reason="Not ready")
    rejected_events = rejected.events.count()

    wave_cancel(wave=wave, actor=carol, reason="Supplier outage")

    assert Wave.objects.get(pk=wave.pk).status == WaveStatus.CANCELLED
    for booking in (approved, submitted):
        booking.refresh_from_db()
        assert booking.status == BookingStatus.WITHDRAWN
        assert booking.events.last().reason == "Wave cancelled: Supplier outage"
        assert booking.events.last().actor == carol
        assert not booking.cohort.filter(active=True).exists()
    assert statuses(airedale) == statuses(bradford) == statuses(leeds) == {S.NOT_SCHEDULED}
    assert Booking.objects.get(pk=rejected.pk).status == BookingStatus.REJECTED
    assert rejected.events.count() == rejected_events
    assert wave_capacity_used(wave) == (0, 0)


def test_a_wave_with_bookings_waiting_for_a_decision_cannot_start(
    wave, carol, airedale, alice, bradford, bob, django_capture_on_commit_callbacks
):
    booking_approve(
        booking=booking_create(wave=wave, organisation=airedale, actor=alice), actor=carol
    )
    booking_create(wave=wave, organisation=bradford, actor=bob)
    wave_close(wave=wave, actor=carol)
    before = snapshot()

    with (
        django_capture_on_commit_callbacks() as queued,
        pytest.raises(TransitionNotAllowed) as refused,
    ):
        wave_start(wave=wave, actor=carol)

    assert str(refused.value) == (
        "Weeknight 1 still has bookings waiting for a decision: approve or reject them first."
    )
    assert snapshot() == before
    assert queued == []


def test_a_wave_with_no_approved_bookings_cannot_start(wave, carol, airedale, alice):
    booking_reject(
        booking=booking_create(wave=wave, organisation=airedale, actor=alice),
        actor=carol,
        reason="Not ready",
    )
    wave_close(wave=wave, actor=carol)
    before = snapshot()

    with pytest.raises(TransitionNotAllowed) as refused:
        wave_start(wave=wave, actor=carol)

    assert str(refused.value) == "Weeknight 1 has no approved bookings to migrate."
    assert snapshot() == before


def test_starting_a_wave_asks_the_worker_to_drive_it(
    wave, carol, airedale, alice, django_capture_on_commit_callbacks
):
    booking_approve(
        booking=booking_create(wave=wave, organisation=airedale, actor=alice), actor=carol
    )
    wave_close(wave=wave, actor=carol)

    with django_capture_on_commit_callbacks(execute=True):
        wave_start(wave=wave, actor=carol)

    assert Wave.objects.get(pk=wave.pk).status == WaveStatus.RUNNING
    (task,) = OrmQ.objects.all()
    assert (task.func(), task.args(), task.name()) == (
        "waves.tasks.drive_wave",
        (wave.pk,),
        f"drive-wave-{wave.pk}",
    )
